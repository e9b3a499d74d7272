"""Full fine-tuning: train every parameter of the model passed in.

The upper baseline of the paper's tables. Whisper's encoder positions are fixed sinusoids
that Hugging Face keeps frozen; they stay frozen here too (``Backbone.fixed``).

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8), method="full")
>>> all(p.requires_grad for p in encoder.parameters())
True

Authors
 * speechbrain-mambadapter contributors 2026
"""

NAME = "full"
TAKES_PLACEMENT = False
MODULES = ()


def attach(backbone, placement, train_norms):
    """Every parameter of the model, the backbone's fixed ones excepted (``train_norms`` has no effect).

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        The model (``backbone.root``) and its fixed parameters.
    placement : None
        Full fine-tuning has no placement.
    train_norms : bool
        Ignored: the norms train with everything else.

    Returns
    -------
    list of torch.nn.Parameter
    """
    fixed = {id(p) for p in backbone.fixed}
    return [p for p in backbone.root.parameters() if id(p) not in fixed]
