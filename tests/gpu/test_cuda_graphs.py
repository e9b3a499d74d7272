"""CUDA-graph inference gives the eager results: the adapted Whisper encoder (fp32 and bf16), a
module under bf16 autocast (also after its weights change in place), the encoders of the AST and
Whisper lobes as the recipes' ``inference_mode: cuda_graph`` routes them, and a whole recipe
(test metrics of ``--inference_mode=cuda_graph`` against ``eager``).

CUDA-graph training (``train_mode: cuda_graph``) follows eager training: a module with BatchNorm
under gradient accumulation, the AST lobe (fp32 and bf16, the epoch's smaller last batch eager),
the Whisper lobe, training and evaluation graphs alternating on one lobe, the lobe inside
``DistributedDataParallel``, and a whole recipe run.
"""

import contextlib
import copy
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.cuda_graphs import CUDAGraphModule, CUDAGraphTrainingModule
from speechbrain_mambadapter.recipe.modes import set_graph_mode

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
    graphed = set_graph_mode(ast, "cuda_graph")
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
    graphed = set_graph_mode(whisper, "cuda_graph")
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


def run_esc50(output, tiny_ast_dir, *flags, batch_size=2):
    """``python recipes/ESC50/train.py hparams/mambadapter.yaml`` on the samples, on cuda:0 in
    bf16; returns its console output and metrics. The default batch size of 2 splits the 3 valid
    and 3 test clips into batches of 2 and 1, so two graphs per evaluation stage."""
    recipe = ROOT / "recipes" / "ESC50"
    command = [
        sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / "mambadapter.yaml"),
        f"--data_folder={ROOT / 'tests' / 'samples' / 'ESC50'}",
        f"--prepared_folder={output.parent / 'prepared'}", f"--output_folder={output}",
        f"--pretrained_source={tiny_ast_dir}", "--n_classes=3", "--num_workers=0", "--max_length=100",
        f"--batch_size={batch_size}",
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


# train_mode: cuda_graph

LOGGER = "speechbrain_mambadapter.cuda_graphs"
MODES_LOGGER = "speechbrain_mambadapter.recipe.modes"
# fp32: graph and eager run the same kernels; what differs is the order of a few atomic additions.
FP32 = dict(rtol=1e-4, atol=1e-5)


def autocast(dtype):
    """SpeechBrain's training context for ``--precision``: bf16 autocast (cast cache on), or none."""
    if dtype == torch.bfloat16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def assert_close_vectors(got, expected, rtol):
    """``got`` is ``expected`` within ``rtol`` of its norm (gradients and weights compared whole:
    the smallest entries of a bf16 gradient carry little relative precision)."""
    assert expected.norm() > 0
    assert (got - expected).norm() <= rtol * expected.norm(), float((got - expected).norm() / expected.norm())


def test_training_module_follows_eager_with_batch_norm_and_gradient_accumulation():
    torch.manual_seed(0)
    eager = (
        torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.BatchNorm1d(128), torch.nn.GELU(), torch.nn.Linear(128, 64)
        )
        .cuda()
        .train()
    )
    model = copy.deepcopy(eager)
    fast = CUDAGraphTrainingModule(model)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, model)]
    for step in range(3):
        micro_batches = [torch.randn(16, 64, device="cuda") for _ in range(2)]
        for net in (eager, fast):
            for x in micro_batches:  # two backward passes into the same .grad
                net(x).pow(2).mean().backward()
        for p, q in zip(model.parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **FP32)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=step == 0)  # in place after the first step, as Brain does
    assert fast.captures == 1
    # The capture's warm-up passes left no trace in the running statistics.
    for got, expected in zip(model.buffers(), eager.buffers()):
        torch.testing.assert_close(got, expected, **FP32)
    for got, expected in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(got, expected, **FP32)


def adapted_ast_and_head(tiny_ast_dir, seed=0):
    """A tiny AST with MambAdapters (no dropout, so that eager and graphed runs draw nothing) and a
    linear head, on the CPU: copy it before moving, so that both runs start from the same weights."""
    from speechbrain_mambadapter.lobes.ast import AST

    torch.manual_seed(seed)
    ast = inject(AST(source=tiny_ast_dir), method="mambadapter", placement="houlsby", rank=8, dropout=0.0)
    return randomise_trainable(ast), torch.nn.Linear(ast.hidden_size, 5)


def classification_batches(sizes, seed=1):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    return [
        (
            0.1 * torch.randn(size, 16000, device="cuda", generator=generator),
            torch.randint(0, 5, (size,), device="cuda", generator=generator),
        )
        for size in sizes
    ]


def train_classifier(ast, head, batches, dtype):
    """Optimiser steps as the classification Brain takes them; returns the losses and, per step,
    the gradient of the AST's trainable parameters (all of them must have one)."""
    ast.train(), head.train()
    trainable = [p for p in ast.parameters() if p.requires_grad]
    # SGD is linear in the gradients: eager and graphed runs stay as close as their gradients.
    optimizer = torch.optim.SGD(trainable + list(head.parameters()), lr=0.1)
    losses, gradients = [], []
    for wavs, labels in batches:
        with autocast(dtype):
            loss = F.cross_entropy(head(ast(wavs)).float(), labels)
        loss.backward()
        assert all(p.grad is not None for p in trainable), "a trainable parameter got no gradient"
        gradients.append(torch.cat([p.grad.flatten() for p in trainable]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, gradients, torch.cat([p.detach().flatten() for p in trainable])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ast_lobe_trains_through_graphs_as_eagerly(tiny_ast_dir, dtype, caplog):
    eager_ast, eager_head = adapted_ast_and_head(tiny_ast_dir)
    ast, head = copy.deepcopy(eager_ast), copy.deepcopy(eager_head)
    initial = torch.cat([p.detach().flatten() for p in ast.parameters() if p.requires_grad]).cuda()
    batches = classification_batches([4, 4, 4, 4, 3])  # an epoch whose last batch is smaller
    expected = train_classifier(eager_ast.cuda(), eager_head.cuda(), batches, dtype)
    graphed = set_graph_mode(ast.cuda(), "cuda_graph", training=True)
    assert graphed is not None and ast.encode is graphed and graphed.graphs is None
    with caplog.at_level(logging.INFO, logger=LOGGER):
        got = train_classifier(ast, head.cuda(), batches, dtype)

    assert graphed.train_graphs.captures == 1  # batches of 4; the last one, of 3, ran eagerly
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("captured the forward and backward" in m for m in messages) == 1
    assert sum("trains eagerly on inputs of shape [(3, 100, 128)]" in m for m in messages) == 1
    tolerance = FP32 if dtype == torch.float32 else BF16
    torch.testing.assert_close(got[0], expected[0], **tolerance)  # the losses, step by step
    for got_gradient, expected_gradient in zip(got[1], expected[1]):
        assert_close_vectors(got_gradient, expected_gradient, tolerance["rtol"])
    assert_close_vectors(got[2], expected[2], tolerance["rtol"])  # the trained weights
    assert not torch.allclose(got[2], initial)  # it did train


def test_whisper_lobe_trains_through_graphs_as_eagerly(tiny_whisper_dir, tmp_path, caplog):
    from speechbrain.integrations.huggingface.whisper import Whisper

    torch.manual_seed(0)
    eager = Whisper(tiny_whisper_dir, save_path=str(tmp_path))
    eager = randomise_trainable(
        inject(eager, method="mambadapter", placement="pfeiffer", rank=8, dropout=0.0)
    )
    whisper = copy.deepcopy(eager)
    generator = torch.Generator(device="cuda").manual_seed(1)
    vocabulary = eager.model.config.vocab_size
    batches = [
        (
            0.1 * torch.randn(size, 3 * 16000, device="cuda", generator=generator),
            torch.randint(0, vocabulary, (size, 6), device="cuda", generator=generator),
        )
        for size in (2, 2, 2, 1)
    ]

    def train(model):
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=0.1)
        losses, gradients = [], []
        for wavs, tokens in batches:  # teacher forcing: tokens[:, :-1] predict tokens[:, 1:]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, logits, _ = model(wavs, tokens[:, :-1])
                loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
            assert all(p.grad is not None for p in trainable), "a trainable parameter got no gradient"
            gradients.append(torch.cat([p.grad.flatten() for p in trainable]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return losses, gradients

    expected = train(eager.cuda())
    graphed = set_graph_mode(whisper.cuda(), "cuda_graph", training=True)
    assert graphed is not None and whisper.forward_encoder is graphed
    with caplog.at_level(logging.INFO, logger=LOGGER):
        got = train(whisper)
    assert graphed.train_graphs.captures == 1
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("trains eagerly on inputs of shape [(1, 80, 3000)]" in m for m in messages) == 1
    torch.testing.assert_close(got[0], expected[0], **BF16)
    for got_gradient, expected_gradient in zip(got[1], expected[1]):
        assert_close_vectors(got_gradient, expected_gradient, BF16["rtol"])


def test_training_and_evaluation_graphs_alternate_on_one_lobe(tiny_ast_dir):
    from speechbrain_mambadapter.lobes.ast import AST

    ast, head = adapted_ast_and_head(tiny_ast_dir)
    ast, head = ast.cuda(), head.cuda()
    evaluation = set_graph_mode(ast, "cuda_graph")
    training = set_graph_mode(ast, "cuda_graph", training=True)
    assert evaluation is training and ast.encode is training
    assert training.graphs is not None and training.train_graphs is not None
    trainable = [p for p in ast.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    eval_wavs = 0.1 * torch.randn(3, 16000, device="cuda")

    for epoch in range(2):
        ast.train()
        for wavs, labels in classification_batches([4, 4], seed=epoch):
            with bf16_autocast():
                loss = F.cross_entropy(head(ast(wavs)).float(), labels)
            loss.backward()
            graphed_gradients = [p.grad.clone() for p in trainable]
            optimizer.zero_grad(set_to_none=True)
            with bf16_autocast():  # the same step with the class's encoder, eagerly
                expected = F.cross_entropy(
                    head(ast.pool(AST.encode(ast, ast.compute_features(wavs)))).float(), labels
                )
            expected.backward()
            torch.testing.assert_close(loss, expected, **BF16)
            assert_close_vectors(
                torch.cat([g.flatten() for g in graphed_gradients]),
                torch.cat([p.grad.flatten() for p in trainable]),
                BF16["rtol"],
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        assert training.graphs._graphs == {}  # dropped in training

        ast.eval()
        for _ in range(2):
            with torch.no_grad(), bf16_autocast():
                got = ast(eval_wavs)
            with torch.no_grad(), bf16_autocast():
                expected = ast.pool(AST.encode(ast, ast.compute_features(eval_wavs)))
            torch.testing.assert_close(got.float(), expected.float(), **BF16)
    assert training.train_graphs.captures == 1  # kept over both evaluations
    assert training.graphs.captures == 2  # one per evaluation: training in between drops it


def test_training_under_distributed_data_parallel_stays_eager(tiny_ast_dir, tmp_path, caplog):
    """Capturing the backward inside DDP fails (cudaErrorStreamCaptureInvalidated, H100 with
    torch 2.11: DDP holds the parameters' AccumulateGrad nodes, made on the default stream), and a
    failed capture leaves the CUDA generator unusable for the process. So ``set_graph_mode`` keeps
    a DDP-wrapped lobe eager, and it trains on CUDA as it would without the option."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_nccl_available():
        pytest.skip("needs NCCL")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        eager_ast, eager_head = adapted_ast_and_head(tiny_ast_dir)
        ast, head = copy.deepcopy(eager_ast), copy.deepcopy(eager_head)
        eager_ast = DistributedDataParallel(eager_ast.cuda(), device_ids=[0])
        ast = DistributedDataParallel(ast.cuda(), device_ids=[0])
        with caplog.at_level(logging.WARNING, logger=MODES_LOGGER):
            assert set_graph_mode(ast, "cuda_graph", training=True) is None  # as the Brains call it
        assert "not supported with DistributedDataParallel" in caplog.text
        assert "encode" not in vars(ast.module)
        batches = classification_batches([4, 4, 3])
        expected = train_classifier(eager_ast, eager_head.cuda(), batches, torch.bfloat16)
        got = train_classifier(ast, head.cuda(), batches, torch.bfloat16)
        torch.testing.assert_close(got[0], expected[0], **BF16)
    finally:
        dist.destroy_process_group()


TRAIN_CAPTURED = "CUDAGraphTrainingModule: captured"


def test_recipe_trains_through_graphs(tiny_ast_dir, tmp_path):
    """Two ``--debug`` epochs of 3 batches of the 9 training clips (4, 4, then 1 eagerly): one
    capture serves both epochs; evaluation graphs as well."""
    output = tmp_path / "run"
    flags = ["--debug", "--debug_batches=3", "--train_mode=cuda_graph", "--inference_mode=cuda_graph"]
    log, metrics = run_esc50(output, tiny_ast_dir, *flags, batch_size=4)
    train_log = (output / "train_log.txt").read_text()
    losses = [float(x) for x in re.findall(r"train loss: ([0-9.e+-]+)", train_log)]
    assert len(losses) == 2 and all(0 < loss < 100 for loss in losses), train_log
    assert metrics["test_clips"] == 3 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert log.count(TRAIN_CAPTURED) == 1, [line for line in log.splitlines() if "CUDAGraph" in line]
    assert log.count("trains eagerly on inputs of shape [(1, 100, 128)]") == 1
    # The batch of 3 of each validation (the training epoch between drops the first); the test
    # stage replays the second one's.
    assert log.count(CAPTURED) == 2
