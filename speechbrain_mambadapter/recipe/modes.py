"""The recipes' graph modes: ``inference_mode`` and ``train_mode`` in their hparams.

``inference_mode: cuda_graph`` (on the command line ``--inference_mode=cuda_graph``) replays the
encoder of the AST or Whisper lobe (``AST.encode``, ``Whisper.forward_encoder``, and
``WhisperEncoder.encode`` of the classification lobe) as CUDA graphs in validation and test;
``train_mode: cuda_graph`` (``--train_mode=cuda_graph``) replays its forward and backward in
training. AST and SpeechBrain's Whisper take one input shape per batch size, as both pad to a
fixed number of frames; ``WhisperEncoder`` runs on the batch's own length, so it gets one graph
per (batch size, length) and is best graphed on clips of one length (ESC-50's). The two settings
are independent: either, both or neither. A recipe's Brain calls :func:`set_graph_mode` once for
each; the machinery is :mod:`speechbrain_mambadapter.cuda_graphs`.

Evaluation graphs can run MambAdapters folded (``MambAdapter.merge``: ``W_down`` inside the Mamba's
``in_proj``, ``alpha·W_up`` inside its ``out_proj``, two matrix products where there were four;
the recipes fold when they evaluate in half precision, ``PETLBrain.use_graph_modes``):
folded before each evaluation call (again only after the weights changed, in place, so that the
captured graphs read the new values), unfolded before each training call. The trained
parameters and the ``state_dict`` never change.

Graphs need the model on a CUDA device, and training graphs cannot be captured under
``DistributedDataParallel``; there the stage runs eagerly, with a warning that says how to get
graphs (or how to silence it), so that a GPU configuration runs anywhere.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

import torch.nn as nn

from speechbrain_mambadapter.cuda_graphs import GraphedMethod, graph_method
from speechbrain_mambadapter.recipe.distributed import is_distributed, unwrap
from speechbrain_mambadapter.tuners.mambadapter import MambAdapter

logger = logging.getLogger(__name__)

INFERENCE_MODES = ("eager", "cuda_graph")
TRAIN_MODES = ("eager", "cuda_graph")

# What each stage graphs, and what the messages call it.
_STAGES = {
    False: {
        "option": "inference_mode",
        "modes": INFERENCE_MODES,
        "default_max_graphs": 4,
        "wrapper": "CUDAGraphModule",
        "runs_eagerly": "validation and test run eagerly",
        "graphed": "replays CUDA graphs of its forward in validation and test, one per batch size",
    },
    True: {
        "option": "train_mode",
        "modes": TRAIN_MODES,
        "default_max_graphs": 1,
        "wrapper": "CUDAGraphTrainingModule",
        "runs_eagerly": "training runs eagerly",
        "graphed": "trains through CUDA graphs of its forward and backward, captured at the first "
        "training batch of each size",
    },
}


def _encoder_method(lobe):
    """The name of the lobe's encoder method (tensors in, a tensor out), or None for a model
    this module does not know."""
    # Imported here, one after the other: a recipe of one lobe need not import the other's module.
    from speechbrain_mambadapter.lobes.ast import AST

    if isinstance(lobe, AST):
        return "encode"
    from speechbrain_mambadapter.lobes.whisper_encoder import WhisperEncoder

    if isinstance(lobe, WhisperEncoder):  # before Whisper, its base class
        return "encode"
    from speechbrain.integrations.huggingface.whisper import Whisper

    if isinstance(lobe, Whisper):
        return "forward_encoder"
    return None


def _why_eager(model, lobe, training):
    """Why ``cuda_graph`` cannot be used for this stage (a sentence for the warning), or None."""
    option = _STAGES[training]["option"]
    if training and (isinstance(model, nn.parallel.DistributedDataParallel) or is_distributed()):
        # Capturing the backward inside DDP fails (cudaErrorStreamCaptureInvalidated): DDP keeps
        # the parameters' AccumulateGrad nodes, made on the default stream, while
        # make_graphed_callables captures on its own stream.
        return (
            "train_mode=cuda_graph is not supported with DistributedDataParallel (multi-GPU "
            "training): training runs eagerly. inference_mode=cuda_graph still applies. Train on "
            "one GPU to use training graphs (or --train_mode=eager to silence this warning)."
        )
    parameter = next(lobe.parameters(), None)
    device = None if parameter is None else parameter.device
    if device is None or device.type != "cuda":
        return (
            f"{option}=cuda_graph needs the model on a CUDA device, but {type(lobe).__name__} is on "
            f"{device}: {_STAGES[training]['runs_eagerly']}. Pass --device=cuda:0 to use CUDA graphs "
            f"(or --{option}=eager to silence this warning)."
        )
    return None


class EvaluationFolding:
    """Folds a model's MambAdapters for evaluation and unfolds them for anything else.

    The ``prepare`` of an evaluation :class:`~speechbrain_mambadapter.cuda_graphs.GraphedMethod`.

    Arguments
    ---------
    model : torch.nn.Module
        A model with MambAdapters (those without a Mamba, the "no Mamba" ablation, have nothing
        to fold and are left alone).

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> from speechbrain_mambadapter import inject
    >>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
    ...                  method="mambadapter", placement="pfeiffer", rank=4, d_state=4)
    >>> folding = EvaluationFolding(encoder)
    >>> len(folding.adapters), folding(True), folding(True), folding.adapters[0].merged_blocks
    (2, True, False, 1)
    >>> folding(False), folding.adapters[0].merged_blocks
    (False, 0)
    """

    def __init__(self, model):
        self.adapters = [m for m in model.modules() if isinstance(m, MambAdapter) and m.mamba is not None]

    def __call__(self, evaluating):
        """Fold (``evaluating``) or unfold every adapter; True when folded matrices were made anew."""
        if not evaluating:
            for adapter in self.adapters:
                adapter.unmerge()
            return False
        created = any(not adapter.merged_blocks for adapter in self.adapters)
        for adapter in self.adapters:
            adapter.merge()  # nothing while the weights are unchanged; in place after they changed
        return created


def set_graph_mode(model, mode, training=False, max_graphs=None, fold=True):
    """Set how the encoder of an AST or Whisper lobe runs in evaluation, or in training.

    ``"cuda_graph"`` with ``training=False`` (the recipes' ``inference_mode``): validation and
    test replay the encoder's forward as CUDA graphs, one per batch size
    (:class:`~speechbrain_mambadapter.cuda_graphs.CUDAGraphModule`). With ``training=True``
    (``train_mode``): the encoder's forward and backward are captured at the first training batch
    of each size (:class:`~speechbrain_mambadapter.cuda_graphs.CUDAGraphTrainingModule`) and
    replayed for the later ones; batches of other sizes (an epoch's last, smaller batch) run
    eagerly, which is logged once. It composes with bf16 or fp16 autocast (``--precision``) and
    with gradient accumulation. The encoder's training outputs are the graph's buffers,
    overwritten by the next training forward: one forward per step, as SpeechBrain's
    ``fit_batch`` runs. Only the encoder is graphed: the features, the rest of the model
    (Whisper's decoder, the head), the loss and the optimiser step stay eager.

    The other stage is left as it is. ``"eager"`` removes the graphs of this stage that a
    previous call set. ``"cuda_graph"`` logs a warning and runs this stage eagerly off CUDA, and,
    for training, under ``DistributedDataParallel`` or in a multi-process ``torch.distributed``
    group (the capture fails there; evaluation graphs still apply). The module tree, the
    ``state_dict`` and the parameters never change (see
    :func:`~speechbrain_mambadapter.cuda_graphs.graph_method`); evaluation graphs run the
    MambAdapters folded, with their folded matrices as non-persistent buffers
    (:class:`EvaluationFolding`).

    Arguments
    ---------
    model : torch.nn.Module
        ``speechbrain_mambadapter.lobes.ast.AST``, ``lobes.whisper_encoder.WhisperEncoder`` or
        SpeechBrain's Hugging Face ``Whisper`` (possibly inside ``DistributedDataParallel``), on
        its device.
    mode : str
        One of ``INFERENCE_MODES`` (``training=False``) or ``TRAIN_MODES`` (``training=True``):
        ``"eager"`` or ``"cuda_graph"``.
    training : bool
        False: validation and test (``inference_mode``); True: training (``train_mode``).
    max_graphs : int, optional
        Input shapes (batch sizes) to capture, more run eagerly; by default 4 for evaluation and
        1 for training (a fixed batch size, whose epochs end with one smaller batch).
    fold : bool
        With evaluation graphs, fold the MambAdapters for evaluation (:class:`EvaluationFolding`).

    Returns
    -------
    GraphedMethod or None
        The graphed encoder method (``.graphs`` and ``.train_graphs`` are its graph modules), or
        None when this stage runs eagerly.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the stage's modes.
    TypeError
        For ``"cuda_graph"`` with a model whose encoder this module does not know (also on CPU).

    Example
    -------
    >>> from transformers import ASTConfig, ASTModel
    >>> from speechbrain_mambadapter.lobes.ast import AST
    >>> config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    >>> ASTModel(config).save_pretrained(getfixture("tmp_path") / "ast")
    >>> ast = AST(source=str(getfixture("tmp_path") / "ast"))
    >>> set_graph_mode(ast, "cuda_graph") is None  # on CPU: a warning, and eager
    True
    >>> set_graph_mode(ast, "graph", training=True)
    Traceback (most recent call last):
    ...
    ValueError: train_mode must be one of ('eager', 'cuda_graph'), got 'graph'.
    """
    stage = _STAGES[bool(training)]
    option = stage["option"]
    if mode not in stage["modes"]:
        raise ValueError(f"{option} must be one of {stage['modes']}, got {mode!r}.")
    lobe = unwrap(model)
    method = _encoder_method(lobe)
    if method is None:
        if mode == "eager":
            return None  # nothing of this module's was installed on an unknown model
        raise TypeError(
            f"{option}='cuda_graph' knows the encoders of speechbrain_mambadapter.lobes.ast.AST and "
            "of the Whisper lobes (speechbrain_mambadapter.lobes.whisper_encoder.WhisperEncoder, "
            f"speechbrain.integrations.huggingface.whisper.Whisper), got a {type(lobe).__name__}. Use "
            f"{option}='eager', or wrap a tensor-in, tensor-out part of the model in "
            f"speechbrain_mambadapter.cuda_graphs.{stage['wrapper']}."
        )
    graphs = None
    if mode == "cuda_graph":
        reason = _why_eager(model, lobe, training)
        if reason is None:
            graphs = stage["default_max_graphs"] if max_graphs is None else max_graphs
        else:
            logger.warning(reason)
    previous = vars(lobe).get(method)
    if not training and isinstance(previous, GraphedMethod) and previous.prepare is not None:
        previous.prepare(False)
        previous.prepare = None
    graphed = graph_method(lobe, method, graphs, training=training)
    if graphs is None:
        return None
    if not training and fold:
        folding = EvaluationFolding(lobe)
        if folding.adapters:
            graphed.prepare = folding
            logger.info(
                "inference_mode=cuda_graph: %d MambAdapters run folded in evaluation (W_down in "
                "in_proj, alpha*W_up in out_proj)",
                len(folding.adapters),
            )
    logger.info(
        "%s=cuda_graph: the %s encoder (%s) %s; batches of other sizes beyond max_graphs=%d run eagerly.",
        option,
        type(lobe).__name__,
        method,
        stage["graphed"],
        graphs,
    )
    return graphed
