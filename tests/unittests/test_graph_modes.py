"""The recipes' ``inference_mode`` and ``train_mode`` (``recipe.modes.set_graph_mode``) on CPU:
accepted values, the eager fallback with its warning (off CUDA; training under DDP), the
encoders it knows, and that the two modes leave each other alone.

The machinery: tests/unittests/test_cuda_graphs.py; capturing and replaying graphs needs CUDA:
tests/gpu/test_cuda_graphs.py.
"""

import copy
import logging

import pytest
import torch

from speechbrain_mambadapter.cuda_graphs import CUDAGraphModule, graph_method
from speechbrain_mambadapter.lobes.ast import AST
from speechbrain_mambadapter.recipe.modes import INFERENCE_MODES, TRAIN_MODES, _encoder_method, set_graph_mode
from tests.unittests.test_cuda_graphs import adapted_ast, assert_same_gradients

LOGGER = "speechbrain_mambadapter.recipe.modes"
OPTIONS = {False: "inference_mode", True: "train_mode"}


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, as torchrun's on one CPU."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_both_stages_accept_eager_and_cuda_graph():
    assert INFERENCE_MODES == TRAIN_MODES == ("eager", "cuda_graph")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("mode", ["graph", "cuda_graphs", "Eager", None])
def test_unknown_mode_names_the_option_and_the_accepted_values(mode, training):
    option = OPTIONS[training]
    with pytest.raises(ValueError, match=rf"^{option} must be one of \('eager', 'cuda_graph'\), got"):
        set_graph_mode(torch.nn.Linear(2, 2), mode, training=training)


@pytest.mark.parametrize("training", [False, True])
def test_cuda_graph_for_an_unknown_model_fails_also_on_cpu(training):
    option = OPTIONS[training]
    model = torch.nn.Linear(2, 2)
    assert set_graph_mode(model, "eager", training=training) is None  # eager needs nothing from the model
    with pytest.raises(
        TypeError, match=f"{option}='cuda_graph' knows the encoders of .*AST and .*Whisper"
    ) as error:
        set_graph_mode(model, "cuda_graph", training=training)
    wrapper = "CUDAGraphTrainingModule" if training else "CUDAGraphModule"
    assert f"got a Linear. Use {option}='eager', or wrap" in str(error.value)
    assert f"speechbrain_mambadapter.cuda_graphs.{wrapper}" in str(error.value)


def test_known_encoders(tiny_ast_dir, tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    assert _encoder_method(AST(source=tiny_ast_dir)) == "encode"
    assert _encoder_method(Whisper(tiny_whisper_dir, save_path=str(tmp_path))) == "forward_encoder"
    assert _encoder_method(torch.nn.Linear(2, 2)) is None


def test_cuda_graph_on_cpu_warns_once_and_evaluates_eagerly(tiny_ast_dir, caplog):
    ast = adapted_ast(tiny_ast_dir).eval()
    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.4])
    with torch.no_grad():
        expected = ast(wavs, lens)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert set_graph_mode(ast, "cuda_graph") is None
        with torch.no_grad():
            for _ in range(2):
                torch.testing.assert_close(ast(wavs, lens), expected, rtol=0, atol=0)
    (warning,) = warnings_of(caplog)
    message = warning.getMessage()
    assert "inference_mode=cuda_graph needs the model on a CUDA device, but AST is on cpu" in message
    assert "validation and test run eagerly" in message
    assert "--device=cuda:0" in message and "--inference_mode=eager" in message
    assert "encode" not in vars(ast)


def test_train_cuda_graph_on_cpu_warns_once_and_trains_eagerly(tiny_ast_dir, caplog):
    eager = adapted_ast(tiny_ast_dir).train()
    ast = copy.deepcopy(eager)
    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.4])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert set_graph_mode(ast, "cuda_graph", training=True) is None
        outputs = []
        for model in (eager, ast):
            torch.manual_seed(0)  # the same dropout masks
            outputs.append(model(wavs, lens))
            outputs[-1].pow(2).sum().backward()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    (warning,) = warnings_of(caplog)
    message = warning.getMessage()
    assert "train_mode=cuda_graph needs the model on a CUDA device, but AST is on cpu" in message
    assert "training runs eagerly" in message
    assert "--device=cuda:0" in message and "--train_mode=eager" in message
    assert "encode" not in vars(ast)
    assert_same_gradients(ast, eager, [n for n, p in ast.named_parameters() if p.requires_grad])


def test_train_cuda_graph_under_ddp_warns_and_trains_eagerly(tiny_ast_dir, process_group, caplog):
    """Capturing the backward inside DistributedDataParallel fails on CUDA, so a DDP-wrapped lobe
    keeps training eagerly, with a warning naming the reason."""
    ast = torch.nn.parallel.DistributedDataParallel(adapted_ast(tiny_ast_dir).train())
    assert set_graph_mode(ast, "eager") is None
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert set_graph_mode(ast, "cuda_graph", training=True) is None
    (warning,) = warnings_of(caplog)
    assert "not supported with DistributedDataParallel" in warning.getMessage()
    assert "--train_mode=eager" in warning.getMessage()
    assert "encode" not in vars(ast.module)
    ast(torch.randn(2, 8000), torch.tensor([1.0, 0.5])).pow(2).sum().backward()


def test_distributed_wrapper_is_looked_through(tiny_ast_dir, process_group):
    from torch.nn.parallel import DistributedDataParallel

    ast = adapted_ast(tiny_ast_dir)
    wrapped = DistributedDataParallel(ast)
    graphed = graph_method(ast, "encode", 4)
    wrapped(torch.randn(2, 8000)).sum().backward()  # DDP's forward reaches the override
    assert all(p.grad is not None for p in ast.parameters() if p.requires_grad)
    assert ast.encode is graphed and "encode" not in vars(wrapped)
    set_graph_mode(wrapped, "eager")  # removes the graphs of the module inside
    assert "encode" not in vars(ast) and ast.encode.__func__ is AST.encode


def test_inference_and_train_modes_leave_each_other_alone(tiny_ast_dir):
    ast = adapted_ast(tiny_ast_dir)
    evaluation = graph_method(ast, "encode", 4)
    training = graph_method(ast, "encode", 1, training=True)
    assert training is evaluation and ast.encode is training  # one object holds both
    assert isinstance(training.graphs, CUDAGraphModule) and training.train_graphs is not None

    assert set_graph_mode(ast, "eager") is None
    assert ast.encode is training and training.graphs is None and training.train_graphs is not None
    train_graphs = training.train_graphs
    assert graph_method(ast, "encode", 4) is training and training.train_graphs is train_graphs
    assert set_graph_mode(ast, "eager", training=True) is None
    assert ast.encode is training and training.graphs is not None and training.train_graphs is None
    set_graph_mode(ast, "eager")
    assert "encode" not in vars(ast)  # both stages eager: the class's method again

    # On CPU, cuda_graph falls back to eager for its own stage and leaves the other one's graphs.
    graphed = graph_method(ast, "encode", 4)
    assert set_graph_mode(ast, "cuda_graph", training=True) is None
    assert ast.encode is graphed and graphed.graphs is not None and graphed.train_graphs is None
    graph_method(ast, "encode", 1, training=True)
    assert set_graph_mode(ast, "cuda_graph") is None
    assert ast.encode is graphed and graphed.graphs is None and graphed.train_graphs is not None


def merged_blocks(model):
    from speechbrain_mambadapter.tuners import MambAdapter

    return [m.merged_blocks for m in model.modules() if isinstance(m, MambAdapter)]


def test_evaluation_graphs_fold_mambadapters_and_training_unfolds_them(tiny_ast_dir, monkeypatch):
    """With evaluation graphs the MambAdapters run folded in evaluation, with the unfolded
    model's outputs, also after training steps and a checkpoint loaded in place; training gets
    them unfolded, with the same gradients; the state_dict never changes. (On CPU the graph
    modules run eagerly; here they are installed as on CUDA.)"""
    import speechbrain_mambadapter.recipe.modes as modes

    monkeypatch.setattr(modes, "_why_eager", lambda model, lobe, training: None)
    reference = adapted_ast(tiny_ast_dir)
    ast = copy.deepcopy(reference)
    state = {k: v.clone() for k, v in ast.state_dict().items()}
    graphed = set_graph_mode(ast, "cuda_graph")
    assert graphed.prepare is not None and len(graphed.prepare.adapters) == 4
    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.7, 0.4])
    trainable = [n for n, p in ast.named_parameters() if p.requires_grad]
    optimizers = [
        torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5) for m in (ast, reference)
    ]

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            return model(wavs, lens)

    for step in range(2):
        torch.testing.assert_close(evaluate(ast), evaluate(reference), rtol=1e-5, atol=1e-5)
        assert merged_blocks(ast) == [1] * 4 and merged_blocks(reference) == [0] * 4
        assert ast.state_dict().keys() == state.keys()
        for model in (ast, reference):
            model.train()
            torch.manual_seed(step)  # the same dropout masks
            model(wavs, lens).pow(2).sum().backward()
        assert merged_blocks(ast) == [0] * 4
        assert_same_gradients(ast, reference, trainable)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()

    # A checkpoint loaded in place between two evaluations (a recipe's test after its validation).
    evaluate(ast)
    buffers = {name: b.data_ptr() for name, b in ast.named_buffers() if "merged_" in name}
    for model in (ast, reference):
        model.load_state_dict(state)
    torch.testing.assert_close(evaluate(ast), evaluate(reference), rtol=1e-5, atol=1e-5)
    assert {name: b.data_ptr() for name, b in ast.named_buffers() if "merged_" in name} == buffers
    assert all(torch.equal(v, state[k]) for k, v in ast.state_dict().items())

    with torch.enable_grad():  # gradients on in eval mode: no graph, and unfolded
        ast(wavs, lens).sum().backward()
    assert merged_blocks(ast) == [0] * 4
    evaluate(ast)
    assert set_graph_mode(ast, "eager") is None and merged_blocks(ast) == [0] * 4
    assert set_graph_mode(ast, "cuda_graph", fold=False).prepare is None
    evaluate(ast)
    assert merged_blocks(ast) == [0] * 4


@pytest.mark.parametrize("eval_precision,folds", [("fp32", False), ("bf16", True), ("fp16", True)])
def test_recipes_fold_for_evaluation_in_half_precision_only(eval_precision, folds, monkeypatch):
    """PETLBrain.use_graph_modes folds the MambAdapters of evaluation graphs in bf16/fp16, where
    folding was measured faster, and not in fp32, where it was measured slower."""
    from types import SimpleNamespace

    from speechbrain_mambadapter.recipe import brain, modes

    calls = []
    monkeypatch.setattr(modes, "set_graph_mode", lambda lobe, mode, **kw: calls.append((mode, kw)))
    owner = SimpleNamespace(
        eval_precision=eval_precision,
        hparams=SimpleNamespace(inference_mode="cuda_graph", train_mode="eager"),
    )
    brain.PETLBrain.use_graph_modes(owner, lobe=object())
    assert calls == [("cuda_graph", {"fold": folds}), ("eager", {"training": True})]
