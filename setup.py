"""Install with ``pip install -e .`` (add ``[cuda]`` on a GPU machine for the fused Mamba kernels)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="speechbrain-mambadapter",
    version="0.1.0",
    description=(
        "Parameter-efficient transfer learning (MambAdapter and baselines) "
        "for Whisper and AST, as SpeechBrain recipes"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["speechbrain_mambadapter", "speechbrain_mambadapter.*"]),
    install_requires=[
        "speechbrain>=1.1,<1.2",
        "torch>=2.4",  # torch.library.custom_op (the Triton kernels)
        "torchaudio>=2.1",
        "transformers>=4.40",
        "hyperpyyaml>=1.2",
        "sentencepiece",
        "soundfile",
        "safetensors",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    extras_require={
        "cuda": ["mamba-ssm>=2.2", "causal-conv1d>=1.4"],
        # python -m speechbrain_mambadapter.study run ... --launcher slurm
        "slurm": ["submitit>=1.5"],
        "dev": ["pytest>=7", "ruff>=0.6", "yamllint>=1.35", "codespell>=2.3"],
    },
)
