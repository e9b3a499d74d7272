"""Linear probing: train nothing in the backbone, only the task head, which lives outside it.

The baseline of the paper's tables: ``inject(model, method="linear")`` freezes the whole
model, so that the recipes' classifier (or decoder) on top of it is all that learns.

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8), method="linear")
>>> any(p.requires_grad for p in encoder.parameters())
False

Authors
 * speechbrain-mambadapter contributors 2026
"""

NAME = "linear"
TAKES_PLACEMENT = False
MODULES = ()


def attach(backbone, placement, train_norms):
    """Nothing to train (``train_norms`` has no effect).

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        The frozen model.
    placement : None
        Linear probing has no placement.
    train_norms : bool
        Ignored: linear probing trains no norm.

    Returns
    -------
    list
        Empty.
    """
    return []
