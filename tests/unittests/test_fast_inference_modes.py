"""The recipes' ``inference_mode`` and ``train_mode`` on CPU: accepted values, the eager fallback,
that routing an encoder through ``CUDAGraphModule`` or ``CUDAGraphTrainingModule`` changes nothing
else (module tree, parameters, training), that the two modes leave each other alone, and the
training module's bookkeeping (capture once per shape, eager beyond ``max_graphs``, gradients of
the graph's node accumulated correctly) around a stand-in for the captured graphs.

Capturing and replaying graphs needs CUDA: tests/gpu/test_fast_inference.py.
"""

import copy
import logging

import pytest
import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.fast_inference import (
    INFERENCE_MODES,
    TRAIN_MODES,
    CUDAGraphModule,
    CUDAGraphTrainingModule,
    GraphedEncoder,
    autocast_state,
    graph_encoder,
    graph_encoder_training,
    set_inference_mode,
    set_train_mode,
)
from speechbrain_mambadapter.lobes.ast import AST

LOGGER = "speechbrain_mambadapter.fast_inference"


def adapted_ast(folder):
    """A tiny AST with MambAdapters whose up-projections are not zero (so that they matter)."""
    torch.manual_seed(0)
    ast = inject(AST(source=folder), method="mambadapter", placement="houlsby", rank=8)
    with torch.no_grad():
        for p in ast.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return ast


def assert_same_gradients(model, reference, names):
    """Every parameter of ``names`` has a gradient, and all of them together are ``reference``'s.

    Compared as one vector: on CPU two identical backward passes of the adapted AST already
    differ in the last bits, which is a large relative error for the smallest gradients.
    """
    params, reference_params = dict(model.named_parameters()), dict(reference.named_parameters())
    assert names and all(params[n].grad is not None for n in names), "a gradient did not arrive"
    got = torch.cat([params[n].grad.flatten() for n in names])
    expected = torch.cat([reference_params[n].grad.flatten() for n in names])
    assert expected.norm() > 0
    assert (got - expected).norm() <= 1e-4 * expected.norm()


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.mark.parametrize("mode", ["graph", "cuda_graphs", "Eager", None])
def test_unknown_mode_names_the_accepted_values(mode):
    with pytest.raises(ValueError, match=r"one of \('eager', 'cuda_graph'\), got"):
        set_inference_mode(torch.nn.Linear(2, 2), mode)
    assert INFERENCE_MODES == ("eager", "cuda_graph")


def test_cuda_graph_for_an_unknown_model_fails_also_on_cpu():
    model = torch.nn.Linear(2, 2)
    assert set_inference_mode(model, "eager") is None  # eager needs nothing from the model
    with pytest.raises(TypeError, match="knows the encoders of .*AST and .*Whisper, got a Linear"):
        set_inference_mode(model, "cuda_graph")


def test_cuda_graph_on_cpu_warns_once_and_runs_eagerly(tiny_ast_dir, caplog):
    ast = adapted_ast(tiny_ast_dir).eval()
    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.4])
    with torch.no_grad():
        expected = ast(wavs, lens)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert set_inference_mode(ast, "cuda_graph") is None
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(ast(wavs, lens), expected, rtol=0, atol=0)
    (warning,) = warnings_of(caplog)
    assert "needs the model on a CUDA device, but AST is on cpu" in warning.getMessage()
    assert "--device=cuda:0" in warning.getMessage()
    assert "encode" not in vars(ast)


def test_graphed_encoder_keeps_the_module_tree_and_shares_the_parameters(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    state = ast.state_dict(keep_vars=True)
    modules = [name for name, _ in ast.named_modules()]
    graphed = graph_encoder(ast)
    assert isinstance(graphed, GraphedEncoder) and ast.encode is graphed
    assert graphed.method == "encode" and graphed.graphs.module.lobe is ast
    assert [name for name, _ in ast.named_modules()] == modules
    after = ast.state_dict(keep_vars=True)
    assert list(after) == list(state) and all(after[k] is state[k] for k in state)
    # A checkpoint loaded in place reaches the graphed encoder: it runs the same parameters.
    graphed_params = dict(graphed.graphs.named_parameters())
    assert all(graphed_params[f"module.lobe.{name}"] is p for name, p in ast.named_parameters())

    set_inference_mode(ast, "eager")
    assert "encode" not in vars(ast) and ast.encode.__func__ is AST.encode


def test_graphed_encoder_leaves_training_and_evaluation_unchanged(tiny_ast_dir):
    eager = adapted_ast(tiny_ast_dir)
    graphed_ast = copy.deepcopy(eager)
    graphed = graph_encoder(graphed_ast)
    wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.6])

    for model in (eager, graphed_ast):
        model.train()
        model(wavs, lens).pow(2).sum().backward()
    trainable = [n for n, p in graphed_ast.named_parameters() if p.requires_grad]
    assert any("mamba" in n for n in trainable)
    assert_same_gradients(graphed_ast, eager, trainable)

    for model in (eager, graphed_ast):
        model.eval()
    with torch.no_grad():
        torch.testing.assert_close(graphed_ast(wavs, lens), eager(wavs, lens), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(graphed_ast(wavs, lens), eager(wavs, lens), rtol=1e-2, atol=1e-2)
    assert graphed.graphs.captures == 0  # CPU inputs: nothing to capture


def test_training_drops_the_graphs_of_the_last_evaluation(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    graphed = graph_encoder(ast)
    graphed.graphs._graphs["stands for a captured graph"] = object()
    feats = ast.compute_features(torch.randn(2, 8000))
    with torch.no_grad():
        ast.eval().encode(feats)
    assert len(graphed.graphs._graphs) == 1  # kept over evaluation batches
    ast.train().encode(feats)
    assert graphed.graphs._graphs == {}  # their memory is free for training


def test_distributed_wrapper_is_looked_through(tiny_ast_dir, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ast = adapted_ast(tiny_ast_dir)
        wrapped = DistributedDataParallel(ast)
        graphed = graph_encoder(wrapped)
        assert ast.encode is graphed and "encode" not in vars(wrapped)
        wrapped(torch.randn(2, 8000)).sum().backward()  # DDP's forward reaches the override
        assert all(p.grad is not None for p in ast.parameters() if p.requires_grad)
        set_inference_mode(wrapped, "eager")
        assert "encode" not in vars(ast)
    finally:
        dist.destroy_process_group()


def test_whisper_encoder_is_graphed_and_trains_as_before(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    torch.manual_seed(0)
    eager = inject(Whisper(tiny_whisper_dir, save_path=str(tmp_path)), method="bottleneck", rank=4)
    with torch.no_grad():
        for p in eager.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    whisper = copy.deepcopy(eager)
    graphed = graph_encoder(whisper)
    assert whisper.forward_encoder is graphed and graphed.method == "forward_encoder"
    assert list(whisper.state_dict()) == list(eager.state_dict())
    wavs = torch.randn(2, 16000)
    tokens = torch.tensor([[whisper.model.config.decoder_start_token_id] * 2] * 2)

    for model in (eager, whisper):
        model.train()
        encoded, logits, _ = model(wavs, tokens)
        (encoded.pow(2).mean() + logits.pow(2).mean()).backward()
    assert_same_gradients(whisper, eager, [n for n, p in whisper.named_parameters() if p.requires_grad])

    with torch.no_grad():
        outputs = [model.eval()(wavs, tokens)[:2] for model in (eager, whisper)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_graph_key_holds_the_autocast_state():
    fast = CUDAGraphModule(torch.nn.Linear(4, 2))
    x = torch.randn(3, 4)
    plain = fast._key((x,))
    assert plain == fast._key((torch.randn(3, 4),))  # same shapes, same graph
    assert plain != fast._key((torch.randn(5, 4),))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = fast._key((x,))
        with torch.autocast("cpu", enabled=False):
            assert fast._key((x,)) == plain  # a disabled autocast is no autocast
    with torch.autocast("cpu", dtype=torch.float16):
        fp16 = fast._key((x,))
    assert len({plain, bf16, fp16}) == 3
    assert plain[0] == (False, None) and bf16[0] == (True, torch.bfloat16)


def test_autocast_state_follows_the_device_type():
    assert autocast_state("cpu") == (False, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_state("cpu") == (True, torch.bfloat16)
        assert autocast_state("cuda") == (False, None)


def test_hf_mask_workaround_only_during_capture_and_only_without_padding():
    from transformers import masking_utils

    from speechbrain_mambadapter.fast_inference import _hf_masks_as_eager

    original = masking_utils._ignore_bidirectional_mask_sdpa
    with _hf_masks_as_eager():
        patched = masking_utils._ignore_bidirectional_mask_sdpa
        assert patched is not original
        assert patched(None, 590) is True  # no padding mask: no mask, as in eager
        padding = torch.tensor([[1, 1, 0]], dtype=torch.bool)
        assert patched(padding, 3) == original(padding, 3)  # a real padding mask is left to HF
    assert masking_utils._ignore_bidirectional_mask_sdpa is original


# train_mode


@pytest.mark.parametrize("mode", ["graph", "cuda_graphs", "Eager", None])
def test_unknown_train_mode_names_the_accepted_values(mode):
    with pytest.raises(ValueError, match=r"train_mode must be one of \('eager', 'cuda_graph'\), got"):
        set_train_mode(torch.nn.Linear(2, 2), mode)
    assert TRAIN_MODES == ("eager", "cuda_graph")


def test_train_cuda_graph_for_an_unknown_model_fails_also_on_cpu():
    model = torch.nn.Linear(2, 2)
    assert set_train_mode(model, "eager") is None
    with pytest.raises(TypeError, match="train_mode='cuda_graph' knows the encoders of .*AST") as error:
        set_train_mode(model, "cuda_graph")
    assert "got a Linear. Use train_mode='eager', or wrap" in str(error.value)
    assert "in CUDAGraphTrainingModule" in str(error.value)


def test_train_cuda_graph_on_cpu_warns_once_and_trains_eagerly(tiny_ast_dir, caplog):
    eager = adapted_ast(tiny_ast_dir).train()
    ast = copy.deepcopy(eager)
    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.4])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert set_train_mode(ast, "cuda_graph") is None
        outputs = []
        for model in (eager, ast):
            torch.manual_seed(0)  # the same dropout masks
            outputs.append(model(wavs, lens))
            outputs[-1].pow(2).sum().backward()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    (warning,) = warnings_of(caplog)
    assert "train_mode=cuda_graph needs the model on a CUDA device, but AST is on cpu" in warning.getMessage()
    assert "--device=cuda:0" in warning.getMessage() and "--train_mode=eager" in warning.getMessage()
    assert "encode" not in vars(ast)
    assert_same_gradients(ast, eager, [n for n, p in ast.named_parameters() if p.requires_grad])


def test_train_cuda_graph_under_ddp_warns_and_trains_eagerly(tiny_ast_dir, tmp_path, caplog):
    """Capturing the backward inside DistributedDataParallel fails on CUDA (H100, torch 2.11),
    so a DDP-wrapped lobe keeps training eagerly, with a warning naming the reason."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ast = torch.nn.parallel.DistributedDataParallel(adapted_ast(tiny_ast_dir).train())
        inference = set_inference_mode(ast, "eager")
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert set_train_mode(ast, "cuda_graph") is None
        (warning,) = warnings_of(caplog)
        assert "not supported with DistributedDataParallel" in warning.getMessage()
        assert "--train_mode=eager" in warning.getMessage()
        assert inference is None and "encode" not in vars(ast.module)
        ast(torch.randn(2, 8000), torch.tensor([1.0, 0.5])).pow(2).sum().backward()
    finally:
        dist.destroy_process_group()


def test_training_graphs_keep_the_module_tree_and_share_the_parameters(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    state = ast.state_dict(keep_vars=True)
    modules = [name for name, _ in ast.named_modules()]
    graphed = graph_encoder_training(ast)
    assert ast.encode is graphed and graphed.graphs is None
    assert isinstance(graphed.train_graphs, CUDAGraphTrainingModule)
    assert graphed.train_graphs.max_graphs == 1 and graphed.train_graphs.module.training
    assert [name for name, _ in ast.named_modules()] == modules
    after = ast.state_dict(keep_vars=True)
    assert list(after) == list(state) and all(after[k] is state[k] for k in state)
    # make_graphed_callables trains module.parameters(): they must be the lobe's own.
    graphed_params = dict(graphed.train_graphs.named_parameters())
    assert all(graphed_params[f"module.lobe.{name}"] is p for name, p in ast.named_parameters())

    set_train_mode(ast, "eager")
    assert "encode" not in vars(ast) and ast.encode.__func__ is AST.encode


def test_inference_and_train_modes_leave_each_other_alone(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    evaluation = graph_encoder(ast)
    training = graph_encoder_training(ast)
    assert training is evaluation and ast.encode is training  # one object holds both
    assert isinstance(training.graphs, CUDAGraphModule) and training.train_graphs is not None

    set_inference_mode(ast, "eager")
    assert ast.encode is training and training.graphs is None and training.train_graphs is not None
    train_graphs = training.train_graphs
    assert graph_encoder(ast) is training and training.train_graphs is train_graphs
    set_train_mode(ast, "eager")
    assert ast.encode is training and training.graphs is not None and training.train_graphs is None
    set_inference_mode(ast, "eager")
    assert "encode" not in vars(ast)

    # On CPU, cuda_graph falls back to eager for its own stage and leaves the other one's graphs.
    graphed = graph_encoder(ast)
    assert set_train_mode(ast, "cuda_graph") is None
    assert ast.encode is graphed and graphed.graphs is not None and graphed.train_graphs is None
    graph_encoder_training(ast)
    assert set_inference_mode(ast, "cuda_graph") is None
    assert ast.encode is graphed and graphed.graphs is None and graphed.train_graphs is not None


def test_training_graphs_are_kept_over_evaluation_and_evaluation_graphs_dropped_in_training(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    graphed = graph_encoder(ast)
    graph_encoder_training(ast)
    graphed.graphs._graphs["stands for an evaluation graph"] = object()
    graphed.train_graphs._graphs["stands for a training graph"] = object()
    feats = ast.compute_features(torch.randn(2, 8000))
    for _ in range(2):
        with torch.no_grad():
            expected = AST.encode(ast.eval(), feats)
            torch.testing.assert_close(ast.encode(feats), expected, rtol=0, atol=0)
        assert len(graphed.graphs._graphs) == 1 and len(graphed.train_graphs._graphs) == 1
        ast.train().encode(feats).sum().backward()
        assert graphed.graphs._graphs == {}  # their memory is free for training
        assert len(graphed.train_graphs._graphs) == 1  # capturing again every epoch would cost more
        graphed.graphs._graphs["stands for an evaluation graph"] = object()


def test_whisper_encoder_gets_training_graphs_and_trains_as_before(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    torch.manual_seed(0)
    eager = inject(Whisper(tiny_whisper_dir, save_path=str(tmp_path)), method="bottleneck", rank=4)
    whisper = copy.deepcopy(eager)
    graphed = graph_encoder_training(whisper)
    assert whisper.forward_encoder is graphed and graphed.method == "forward_encoder"
    assert list(whisper.state_dict()) == list(eager.state_dict())
    wavs = torch.randn(2, 16000)
    tokens = torch.tensor([[whisper.model.config.decoder_start_token_id] * 2] * 2)
    for model in (eager, whisper):
        encoded, logits, _ = model.train()(wavs, tokens)
        (encoded.pow(2).mean() + logits.pow(2).mean()).backward()
    assert_same_gradients(whisper, eager, [n for n, p in whisper.named_parameters() if p.requires_grad])


class StaticBufferGraph(torch.autograd.Function):
    """A CPU stand-in for the node ``make_graphed_callables`` returns: ``x @ weight.T`` whose
    backward writes the weight's gradient into one static buffer and returns a view of it, as the
    replayed backward graph does."""

    @staticmethod
    def forward(ctx, x, weight, static_grad):
        ctx.save_for_backward(x)
        ctx.static_grad = static_grad
        return (x @ weight.T).detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        ctx.static_grad.copy_(grad.T @ x)
        return None, ctx.static_grad.detach(), None


@pytest.fixture
def stand_in_graphs(monkeypatch):
    """``CUDAGraphTrainingModule`` on CPU with ``StaticBufferGraph`` in place of each capture, for
    a bias-free ``Linear``; returns the static gradient buffers of the captures."""
    buffers = []

    def capture(self, args, autocast):
        static_grad = torch.zeros_like(self.module.weight)
        buffers.append(static_grad)
        return lambda x: StaticBufferGraph.apply(x, self.module.weight, static_grad)

    monkeypatch.setattr(CUDAGraphTrainingModule, "_graphable", lambda self, args: self.module.training)
    monkeypatch.setattr(CUDAGraphTrainingModule, "_capture", capture)
    return buffers


def test_training_module_captures_once_per_shape_and_runs_other_shapes_eagerly(stand_in_graphs, caplog):
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3, bias=False)
    fast = CUDAGraphTrainingModule(linear)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for batch in (5, 5, 2, 5, 2):
            x = torch.randn(batch, 4)
            torch.testing.assert_close(fast(x), linear(x))
    assert fast.captures == 1 and len(stand_in_graphs) == 1
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("captured the forward and backward of Linear" in m for m in messages) == 1
    (eager,) = [m for m in messages if "trains eagerly" in m]  # logged once for two batches
    assert "inputs of shape [(2, 4)]" in eager and "max_graphs=1" in eager
    fast.eval()
    with torch.no_grad():
        fast(torch.randn(3, 4))
    assert fast.captures == 1  # evaluation is not the training graph's business


def test_training_module_gradients_accumulate_over_replays(stand_in_graphs):
    """Without the copy of the node's gradients, autograd would keep the static buffer as .grad,
    and the second replay would overwrite it before adding: 2 x the second gradient."""
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3, bias=False)
    linear = copy.deepcopy(reference)
    fast = CUDAGraphTrainingModule(linear)
    batches = [torch.randn(5, 4) for _ in range(2)]
    for x in batches:
        fast(x).pow(2).sum().backward()
        reference(x).pow(2).sum().backward()
    (static_grad,) = stand_in_graphs
    assert linear.weight.grad.data_ptr() != static_grad.data_ptr()
    torch.testing.assert_close(linear.weight.grad, reference.weight.grad)

    linear.weight.grad.zero_()  # as zero_grad(set_to_none=False) does
    reference.weight.grad.zero_()
    fast(batches[0]).pow(2).sum().backward()
    reference(batches[0]).pow(2).sum().backward()
    torch.testing.assert_close(linear.weight.grad, reference.weight.grad)


def test_training_module_checks_its_arguments():
    with pytest.raises(ValueError, match="max_graphs >= 0 and warmup >= 1, got -1 and 3"):
        CUDAGraphTrainingModule(torch.nn.Linear(2, 2), max_graphs=-1)
    fast = CUDAGraphTrainingModule(torch.nn.Linear(4, 2))
    x = torch.randn(3, 4)
    assert fast._key((x,)) == fast._key((torch.randn(3, 4),))
    assert fast._key((x,)) != fast._key((torch.randn(2, 4),))
    # make_graphed_callables needs sample inputs with the real inputs' requires_grad.
    assert fast._key((x,)) != fast._key((x.clone().requires_grad_(),))


def test_captures_default_to_thread_local_only_inside_the_shim():
    """For PyTorch versions whose make_graphed_callables takes no capture_error_mode."""
    import inspect

    from speechbrain_mambadapter.fast_inference import _thread_local_captures

    original = torch.cuda.graph
    with _thread_local_captures():
        assert issubclass(torch.cuda.graph, original)
        mode = inspect.signature(torch.cuda.graph.__init__).parameters["capture_error_mode"]
        assert mode.default == "thread_local"
    assert torch.cuda.graph is original
