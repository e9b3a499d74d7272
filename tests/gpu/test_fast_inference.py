"""CUDA-graph inference gives the eager results: the adapted Whisper encoder (fp32 and bf16), a
module under bf16 autocast (also after its weights change in place), the encoders of the AST and
Whisper lobes as the recipes' ``inference_mode: cuda_graph`` routes them, and a whole recipe
(test metrics of ``--inference_mode=cuda_graph`` against ``eager``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.fast_inference import CUDAGraphModule, set_inference_mode

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROOT = Path(__file__).resolve().parents[2]
# bf16 keeps 8 bits of mantissa; graph and eager run the same kernels, so this is a wide margin.
BF16 = dict(rtol=2e-2, atol=2e-2)


class EncoderOutput(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder(x).last_hidden_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_replay_matches_eager(dtype):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256)
    encoder = inject(WhisperEncoder(config), method="mambadapter", placement="houlsby", rank=16)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # W_up starts at zero: make the adapters matter
    model = EncoderOutput(encoder).to("cuda", dtype).eval()
    fast = CUDAGraphModule(model)
    with torch.inference_mode():
        for batch in (1, 2, 1):
            x = torch.randn(batch, 80, 3000, device="cuda", dtype=dtype)
            torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)
    assert len(fast._graphs) == 2


def bf16_autocast():
    """A new bf16 autocast per call, as SpeechBrain's ``evaluate_batch`` opens one per batch: the
    weight casts cached by the context of a capture are freed before the next replay."""
    return torch.autocast("cuda", dtype=torch.bfloat16)


def randomise_trainable(model, scale=0.05):
    """Make the adapters matter (MambAdapter's up-projection starts at zero)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)
    return model


def test_graph_under_bf16_autocast_matches_eager_and_sees_weights_loaded_in_place():
    torch.manual_seed(0)
    # Weights that require grad, as adapter weights do: autocast caches the casts of such weights.
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.LayerNorm(256), torch.nn.Linear(256, 64)
    )
    model = model.cuda().eval()
    fast = CUDAGraphModule(model)
    batches = [torch.randn(8, 64, device="cuda") for _ in range(3)]

    def check():
        outputs = []
        for x in batches:
            with torch.no_grad(), bf16_autocast():
                got = fast(x)
            # Memory that the autocast above freed is handed out again, filled with NaN: a graph
            # reading a freed weight cast would read NaN at the next replay.
            junk = [torch.full_like(p, float("nan"), dtype=torch.bfloat16) for p in model.parameters()]
            with torch.no_grad(), bf16_autocast():
                expected = model(x)
            del junk
            assert got.dtype == expected.dtype == torch.bfloat16
            torch.testing.assert_close(got, expected, **BF16)
            outputs.append(got)
        return outputs

    before = check()
    assert fast.captures == 1
    # In place, as Checkpointer loads the best checkpoint before the test stage; a graph that kept
    # the casts of the old weights would give the old outputs.
    model.load_state_dict({k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()})
    after = check()
    assert fast.captures == 1
    assert not torch.allclose(before[0].float(), after[0].float(), **BF16)

    # Without autocast: a graph of its own, in fp32 (not a replay of the bf16 graph).
    with torch.no_grad():
        got, expected = fast(batches[0]), model(batches[0])
    assert got.dtype == torch.float32 and fast.captures == 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ast_lobe_encoder_replays_graphs_matching_eager(tiny_ast_dir):
    from speechbrain_mambadapter.lobes.ast import AST

    torch.manual_seed(0)
    ast = inject(AST(source=tiny_ast_dir), method="mambadapter", placement="houlsby", rank=8)
    ast = randomise_trainable(ast).cuda().eval()
    graphed = set_inference_mode(ast, "cuda_graph")
    assert graphed is not None and ast.encode is graphed

    def check(batch_sizes):
        outputs = []
        for batch in batch_sizes:
            wavs = torch.randn(batch, 16000, device="cuda")
            lens = torch.linspace(1.0, 0.5, batch, device="cuda")
            with torch.no_grad(), bf16_autocast():
                got = ast(wavs, lens)
            with torch.no_grad(), bf16_autocast():
                expected = ast.pool(AST.encode(ast, ast.compute_features(wavs, lens)))  # eager encoder
            torch.testing.assert_close(got.float(), expected.float(), **BF16)
            outputs.append(got)
        return outputs

    check([2, 3, 2])
    assert graphed.graphs.captures == 2
    # The adapters loaded in place (a checkpoint): the same graphs replay the new weights.
    torch.manual_seed(1)
    before = check([2])
    new = {name: p + 0.2 * torch.randn_like(p) for name, p in ast.named_parameters() if p.requires_grad}
    ast.load_state_dict(new, strict=False)
    torch.manual_seed(1)
    after = check([2])
    assert graphed.graphs.captures == 2
    assert not torch.allclose(before[0].float(), after[0].float(), **BF16)

    # A training step runs eagerly (gradients reach the adapters) and drops the graphs.
    ast.train()
    trainable = [p for p in ast.parameters() if p.requires_grad]
    with bf16_autocast():
        ast(torch.randn(2, 16000, device="cuda")).float().pow(2).mean().backward()
    assert all(p.grad is not None for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in trainable)
    assert graphed.graphs._graphs == {}
    ast.eval()
    check([2])
    assert graphed.graphs.captures == 3


def test_whisper_lobe_encoder_replays_graphs_matching_eager(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    torch.manual_seed(0)
    whisper = Whisper(tiny_whisper_dir, save_path=str(tmp_path))
    whisper = inject(whisper, method="mambadapter", placement="pfeiffer", rank=8)
    whisper = randomise_trainable(whisper).cuda().eval()
    graphed = set_inference_mode(whisper, "cuda_graph")
    assert graphed is not None and whisper.forward_encoder is graphed
    start = whisper.model.config.decoder_start_token_id

    for batch in (2, 1, 2):
        wavs = torch.randn(batch, 3 * 16000, device="cuda")
        tokens = torch.full((batch, 2), start, device="cuda")
        with torch.no_grad(), bf16_autocast():
            encoded, logits, _ = whisper(wavs, tokens)  # what the Common Voice recipe calls
        with torch.no_grad(), bf16_autocast():
            expected = Whisper.forward_encoder(whisper, whisper._get_mel(wavs))  # eager encoder
            expected_logits, _, _ = whisper.forward_decoder(expected, tokens)
        assert encoded.shape == expected.shape == (batch, 1500, whisper.model.config.d_model)
        torch.testing.assert_close(encoded.float(), expected.float(), **BF16)
        torch.testing.assert_close(logits, expected_logits, **BF16)
    assert graphed.graphs.captures == 2


CAPTURED = "CUDAGraphModule: captured"


def run_esc50(output, tiny_ast_dir, *flags):
    """``python recipes/ESC50/train.py hparams/mambadapter.yaml`` on the samples, on cuda:0 in
    bf16; returns its console output and metrics."""
    recipe = ROOT / "recipes" / "ESC50"
    command = [
        sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / "mambadapter.yaml"),
        f"--data_folder={ROOT / 'tests' / 'samples' / 'ESC50'}",
        f"--prepared_folder={output.parent / 'prepared'}", f"--output_folder={output}",
        f"--pretrained_source={tiny_ast_dir}", "--n_classes=3", "--num_workers=0", "--max_length=100",
        "--batch_size=2",  # 3 valid and 3 test clips: batches of 2 and 1, so two graphs per stage
        "--device=cuda:0", "--precision=bf16", "--eval_precision=bf16", *flags,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr, json.loads((output / "metrics.json").read_text())


def test_recipe_with_cuda_graphs_gives_the_eager_test_metrics(tiny_ast_dir, tmp_path):
    """A ``--debug`` run that validates through graphs, then its best checkpoint tested again,
    eagerly and through graphs (the same weights: GPU training itself is not bitwise repeatable)."""
    output = tmp_path / "run"
    debug = ["--debug", "--debug_persistently"]
    log, metrics = run_esc50(output, tiny_ast_dir, *debug, "--inference_mode=cuda_graph")
    assert re.search(r"epoch: 2, .*valid loss", (output / "train_log.txt").read_text())
    assert metrics["test_clips"] == 3 and 0.0 <= metrics["test_accuracy"] <= 1.0
    # Each validation captures batches of 2 and 1; the training epoch between them drops the
    # graphs; the test stage replays those of the second validation.
    assert log.count(CAPTURED) == 4, [line for line in log.splitlines() if CAPTURED in line]

    # No epochs left: these runs only load the best checkpoint and test it.
    eager_log, eager = run_esc50(output, tiny_ast_dir, "--number_of_epochs=2", "--inference_mode=eager")
    graph_log, graph = run_esc50(output, tiny_ast_dir, "--number_of_epochs=2", "--inference_mode=cuda_graph")
    assert "Going into epoch" not in eager_log + graph_log
    assert CAPTURED not in eager_log and graph_log.count(CAPTURED) == 2
    assert eager["test_clips"] == graph["test_clips"] == 3
    assert abs(graph["test_accuracy"] - eager["test_accuracy"]) <= 1e-2
    assert abs(graph["test_loss"] - eager["test_loss"]) <= 1e-2
