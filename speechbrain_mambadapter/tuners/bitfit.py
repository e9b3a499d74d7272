"""BitFit (Ben Zaken et al. 2022): train only the biases of the backbone's linear and norm layers.

BitFit adds no module: the trainable tensors are the backbone's own biases, so this file
only selects them (by layer type, not by name). Covered: ``nn.Linear``, ``nn.Conv1d/2d``,
``nn.LayerNorm``, ``nn.BatchNorm1d/2d``, ``nn.GroupNorm`` and the ``in_proj_bias`` of
``nn.MultiheadAttention`` (its query/key/value biases).

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8), method="bitfit")
>>> all(n.endswith("bias") for n, p in encoder.named_parameters() if p.requires_grad)
True

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch.nn as nn

BIASED_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.LayerNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.GroupNorm,
)


def bitfit_parameters(module):
    """The bias parameters BitFit trains in ``module``.

    Arguments
    ---------
    module : torch.nn.Module
        The (encoder) module to search.

    Returns
    -------
    list of torch.nn.Parameter

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    >>> [tuple(p.shape) for p in bitfit_parameters(net)]
    [(4,), (4,)]
    """
    found = []
    for layer in module.modules():
        if isinstance(layer, BIASED_LAYERS) and isinstance(getattr(layer, "bias", None), nn.Parameter):
            found.append(layer.bias)
        elif isinstance(layer, nn.MultiheadAttention) and layer.in_proj_bias is not None:
            found.append(layer.in_proj_bias)
    return found


NAME = "bitfit"
TAKES_PLACEMENT = False
MODULES = ()


def attach(backbone, placement, train_norms):
    """Return the biases of the encoder's linear and norm layers (``train_norms`` has no effect).

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the encoder is.
    placement : None
        BitFit has no placement.
    train_norms : bool
        Ignored: the norms' biases are trained, their weights are not.

    Returns
    -------
    list of torch.nn.Parameter

    Raises
    ------
    ValueError
        When the encoder has no bias to train.
    """
    found = bitfit_parameters(backbone.encoder)
    if not found:
        raise ValueError(
            f"Method 'bitfit' matched nothing to train in {type(backbone.root).__name__}: its encoder has "
            "no biases in linear, convolution, norm or attention layers; use another method."
        )
    return found
