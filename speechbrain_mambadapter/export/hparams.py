"""The inference ``hyperparams.yaml`` of an exported adapter, derived from the run's own.

The base model is the run's ``!new:`` constructor with its ``source`` and ``save_path`` made
top-level keys (``base_model_source``, ``base_model_cache``: overridable), wrapped in
``speechbrain_mambadapter.inference.attach_adapter`` (base-model check, then the ``inject`` call
recorded in the adapter weights); the Common Voice recipe's test searcher is copied as it was;
a ``Pretrainer`` loads the adapter, the head and the labels from the folder.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json

from speechbrain_mambadapter.export.run import ADAPTED_KEY, RUN_HPARAMS, ExportError, plain, tag_of
from speechbrain_mambadapter.inference import INTERFACES
from speechbrain_mambadapter.inference.adapter import ADAPTER_WEIGHTS, HEAD_WEIGHTS, LABELS_FILE

LANGUAGE_TOKEN_TAG = "!apply:speechbrain_mambadapter.lobes.whisper_tokens.add_language_token"


class Ref:
    """A ``!ref <name>`` in the YAML written here."""

    def __init__(self, name):
        self.name = name


def yaml_value(value):
    """One value of the YAML written here: a scalar, a ``Ref``, or a flat list of those.

    Example
    -------
    >>> yaml_value([Ref("whisper")]), yaml_value("a: b"), yaml_value(None), yaml_value(0.1)
    ('[!ref <whisper>]', '"a: b"', 'null', '0.1')
    """
    if isinstance(value, Ref):
        return f"!ref <{value.name}>"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    value = plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def yaml_object(key, tag, arguments, indent=""):
    """``key: <tag>`` and its keyword arguments, one per line, as YAML text."""
    lines = [f"{indent}{key}: {tag}"]
    lines += [f"{indent}    {name}: {yaml_value(value)}" for name, value in arguments.items()]
    return "\n".join(lines)


def node_arguments(node, refs, what):
    """The arguments of a tagged mapping node; nodes in ``refs`` (by identity) become ``Ref``s."""
    arguments = {}
    for name, value in node.items():
        if id(value) in refs:
            value = Ref(refs[id(value)])
        elif isinstance(value, list):
            value = [Ref(refs[id(item)]) if id(item) in refs else item for item in value]
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
            raise ExportError(f"Cannot export {what}: its argument {name!r} is a nested object.")
        arguments[name] = value
    return arguments


def inference_hparams(run, petl_config, base_sha256, head_shape=None):
    """The text of the inference ``hyperparams.yaml`` for ``run``'s adapter.

    Arguments
    ---------
    run : Run
        The run.
    petl_config : dict
        The ``inject`` call (from the adapter weights' metadata).
    base_sha256 : str or None
        The base model's ``weights_sha256``.
    head_shape : tuple of int, optional
        ``(n_classes, embedding size)`` of the classification head.

    Returns
    -------
    str
    """
    base = node_arguments(run.base, {}, "the base model")
    base["source"] = Ref("base_model_source")
    if "save_path" in base:
        base["save_path"] = Ref("base_model_cache")
    attach = {"base_model_sha256": Ref("base_model_sha256"), "method": petl_config["method"]}
    if petl_config["placement"] is not None:
        attach["placement"] = petl_config["placement"]
    attach["train_norms"] = petl_config["train_norms"]
    attach.update(petl_config["kwargs"])
    key = ADAPTED_KEY[run.task]
    test_opts = run.hparams.get("test_dataloader_opts") or {}
    interface = INTERFACES[run.task].__name__
    lines = [
        "# Inference hparams of an adapter exported by speechbrain_mambadapter.export; load this folder with",
        f"#   speechbrain_mambadapter.inference.{interface}.from_hparams(source=<folder>)",
        "# or python -m speechbrain_mambadapter "
        f"{'classify' if run.task == 'classification' else 'transcribe'} --adapter <folder> FILES...",
        "",
        "adapter_folder: !PLACEHOLDER  # this folder (or hub id); from_hparams fills it in",
        f"base_model_source: {yaml_value(plain(run.base['source']))}  # hub id or local folder",
        "base_model_cache: pretrained_models  # where hub downloads go",
        f"base_model_sha256: {yaml_value(base_sha256)}  # null skips the base-model check",
        f"sample_rate: {yaml_value(run.value('sample_rate', 16000))}",
        f"precision: {yaml_value(run.precision())}  # the run's evaluation precision",
        f"batch_size: {yaml_value(plain(test_opts.get('batch_size', 1)))}  # the recipe's test batches",
        "",
        "# The base model as the run built it, checked against base_model_sha256, then the PETL method.",
        f"{key}: !apply:speechbrain_mambadapter.inference.attach_adapter",
        yaml_object("model", tag_of(run.base), base, indent="    "),
        *[f"    {name}: {yaml_value(value)}" for name, value in attach.items()],
        "",
    ]
    loadables = {
        "petl": (f"!new:speechbrain_mambadapter.checkpoint.PETLCheckpoint [!ref <{key}>]", ADAPTER_WEIGHTS)
    }
    hooks = {}
    if run.task == "classification":
        lines += [
            yaml_object(
                "classifier",
                "!new:torch.nn.Linear",
                {"in_features": head_shape[1], "out_features": head_shape[0]},
            ),
            "label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder",
            "",
            "modules:",
            "    backbone: !ref <backbone>",
            "    classifier: !ref <classifier>",
        ]
        loadables["classifier"] = ("!ref <classifier>", HEAD_WEIGHTS)
        loadables["label_encoder"] = ("!ref <label_encoder>", LABELS_FILE)
        hooks["classifier"] = "!name:speechbrain_mambadapter.inference.load_safetensors_module"
    else:
        language_node = run.hparams.get("language_token_id")
        if language_node is None:
            language = "language_token_id: null  # an English-only Whisper: no language token in the prompt"
        elif tag_of(language_node) == LANGUAGE_TOKEN_TAG:
            language = "\n".join(
                [
                    "# The new language token <|language|>; its trained row is in the adapter weights.",
                    f"language_token_id: {LANGUAGE_TOKEN_TAG}",
                    "    tokenizer: !ref <whisper.tokenizer>",
                    "    model: !ref <whisper>",
                    "    language: !ref <language>",
                ]
            )
        else:
            raise ExportError(
                f"language_token_id of {run.folder / RUN_HPARAMS} is neither null nor {LANGUAGE_TOKEN_TAG}; "
                "export does not know how to rebuild it."
            )
        search = run.hparams["test_search"]
        lines += [
            f"language: {yaml_value(run.value('language'))}",
            language,
            "",
            "# The recipe's test searcher.",
            yaml_object(
                "decoder", tag_of(search), node_arguments(search, {id(run.adapted): "whisper"}, "test_search")
            ),
            "",
            "modules:",
            "    whisper: !ref <whisper>",
            "    decoder: !ref <decoder>",
        ]
    lines += ["", "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer", "    loadables:"]
    lines += [f"        {name}: {obj}" for name, (obj, _) in loadables.items()]
    lines += ["    paths:"]
    lines += [f"        {name}: !ref <adapter_folder>/{file}" for name, (_, file) in loadables.items()]
    if hooks:
        lines += ["    custom_hooks:"] + [f"        {name}: {hook}" for name, hook in hooks.items()]
    return "\n".join(lines) + "\n"
