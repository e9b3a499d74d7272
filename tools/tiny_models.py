"""Small randomly initialised models saved to a folder, for tests, debug runs and benchmarks.

:func:`save_random_ast` writes an Audio Spectrogram Transformer that
``speechbrain_mambadapter.lobes.ast.AST(source=folder)`` (recipes: ``--pretrained_source=folder``)
loads like a released checkpoint; the tiny Whisper is in ``tools/whisper_assets.py``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import os

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel


def save_random_ast(folder, seed=0, **config_overrides):
    """Save a small randomly initialised AST (and its feature extractor) for tests and debug runs.

    The default is tiny (2 layers, 32 wide, 100 frames of 128 mel bins); any
    ``transformers.ASTConfig`` field can be overridden. Unlike a freshly built
    ``ASTModel``, whose CLS, distillation and positional embeddings are zero,
    these are drawn from N(0, 0.02^2), so code that moves them can be tested.

    Arguments
    ---------
    folder : str or path-like
        Created if missing; receives ``config.json``, ``model.safetensors`` and
        ``preprocessor_config.json``.
    seed : int
        Seed of the random initialisation (the global RNG state is restored).
    **config_overrides
        ``ASTConfig`` fields, e.g. ``hidden_size=768, num_hidden_layers=12``.

    Returns
    -------
    str
        ``folder``, usable as ``AST(source=...)``.

    Example
    -------
    >>> import tempfile
    >>> folder = save_random_ast(tempfile.mkdtemp(), num_hidden_layers=1)
    >>> ASTConfig.from_pretrained(folder).num_hidden_layers
    1
    """
    settings = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=100,
        num_mel_bins=128,
    )
    settings.update(config_overrides)
    config = ASTConfig(**settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTModel(config)
        emb = model.embeddings
        with torch.no_grad():
            for param in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
                param.normal_(0.0, 0.02)
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    extractor = ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)
    extractor.save_pretrained(folder)
    return folder
