"""The CUDA-graph machinery on CPU: routing a method through ``CUDAGraphModule`` or
``CUDAGraphTrainingModule`` (:func:`graph_method`) changes nothing else (module tree, parameters,
training), evaluation and training graphs live side by side on one method, graph keys, and the
training module's bookkeeping (capture once per shape, eager beyond ``max_graphs``, gradients of
the graph's node accumulated correctly) around a stand-in for the captured graphs.

Capturing and replaying graphs needs CUDA: tests/gpu/test_cuda_graphs.py.
"""

import copy
import logging

import pytest
import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.cuda_graphs import (
    CUDAGraphModule,
    CUDAGraphTrainingModule,
    GraphedMethod,
    autocast_state,
    graph_method,
)
from speechbrain_mambadapter.lobes.ast import AST

LOGGER = "speechbrain_mambadapter.cuda_graphs"


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


def adapted_whisper(folder, save_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    torch.manual_seed(0)
    whisper = inject(Whisper(folder, save_path=str(save_path)), method="bottleneck", rank=4)
    with torch.no_grad():
        for p in whisper.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return whisper


def test_graph_method_installs_one_object_for_both_stages_and_removes_it_when_idle():
    model = torch.nn.Linear(4, 2)
    assert graph_method(model, "forward", None) is None and "forward" not in vars(model)
    evaluation = graph_method(model, "forward", 3)
    assert isinstance(evaluation, GraphedMethod) and model.forward is evaluation
    assert evaluation.graphs.max_graphs == 3 and evaluation.train_graphs is None
    training = graph_method(model, "forward", 2, training=True)
    assert training is evaluation and training.train_graphs.max_graphs == 2
    graphs = training.graphs
    assert graph_method(model, "forward", 5, training=True).graphs is graphs  # the other stage stays
    assert graph_method(model, "forward", None) is training and training.graphs is None
    assert graph_method(model, "forward", None, training=True) is None
    assert "forward" not in vars(model) and model.forward.__func__ is torch.nn.Linear.forward


def test_graph_method_names_a_missing_method():
    with pytest.raises(AttributeError, match="Linear has no method 'encode'"):
        graph_method(torch.nn.Linear(4, 2), "encode", 4)


def test_graphed_method_keeps_the_module_tree_and_shares_the_parameters(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    state = ast.state_dict(keep_vars=True)
    modules = [name for name, _ in ast.named_modules()]
    graphed = graph_method(ast, "encode", 4)
    assert ast.encode is graphed and graphed.method == "encode" and graphed.graphs.module.owner is ast
    assert [name for name, _ in ast.named_modules()] == modules
    after = ast.state_dict(keep_vars=True)
    assert list(after) == list(state) and all(after[k] is state[k] for k in state)
    # A checkpoint loaded in place reaches the graphed encoder: it runs the same parameters.
    graphed_params = dict(graphed.graphs.named_parameters())
    assert all(graphed_params[f"module.owner.{name}"] is p for name, p in ast.named_parameters())


def test_graphed_method_leaves_training_and_evaluation_unchanged(tiny_ast_dir):
    eager = adapted_ast(tiny_ast_dir)
    graphed_ast = copy.deepcopy(eager)
    graphed = graph_method(graphed_ast, "encode", 4)
    wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.6])

    for model in (eager, graphed_ast):
        model.train()
        torch.manual_seed(1)  # the same dropout masks in both (the adapters' dropout is 0.1)
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
    graphed = graph_method(ast, "encode", 4)
    graphed.graphs._graphs["stands for a captured graph"] = object()
    feats = ast.compute_features(torch.randn(2, 8000))
    with torch.no_grad():
        ast.eval().encode(feats)
    assert len(graphed.graphs._graphs) == 1  # kept over evaluation batches
    ast.train().encode(feats)
    assert graphed.graphs._graphs == {}  # their memory is free for training


def test_whisper_encoder_is_graphed_and_trains_as_before(tiny_whisper_dir, tmp_path):
    eager = adapted_whisper(tiny_whisper_dir, tmp_path)
    whisper = copy.deepcopy(eager)
    graphed = graph_method(whisper, "forward_encoder", 4)
    assert whisper.forward_encoder is graphed
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


# Training graphs


def test_training_graphs_keep_the_module_tree_and_share_the_parameters(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    state = ast.state_dict(keep_vars=True)
    modules = [name for name, _ in ast.named_modules()]
    graphed = graph_method(ast, "encode", 1, training=True)
    assert ast.encode is graphed and graphed.graphs is None
    assert isinstance(graphed.train_graphs, CUDAGraphTrainingModule)
    assert graphed.train_graphs.max_graphs == 1 and graphed.train_graphs.module.training
    assert [name for name, _ in ast.named_modules()] == modules
    after = ast.state_dict(keep_vars=True)
    assert list(after) == list(state) and all(after[k] is state[k] for k in state)
    # make_graphed_callables trains module.parameters(): they must be the lobe's own.
    graphed_params = dict(graphed.train_graphs.named_parameters())
    assert all(graphed_params[f"module.owner.{name}"] is p for name, p in ast.named_parameters())


def test_training_graphs_are_kept_over_evaluation_and_evaluation_graphs_dropped_in_training(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    graphed = graph_method(ast, "encode", 4)
    graph_method(ast, "encode", 1, training=True)
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
    eager = adapted_whisper(tiny_whisper_dir, tmp_path)
    whisper = copy.deepcopy(eager)
    graphed = graph_method(whisper, "forward_encoder", 1, training=True)
    assert whisper.forward_encoder is graphed
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
