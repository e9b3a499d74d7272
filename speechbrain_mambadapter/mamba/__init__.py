"""Mamba blocks with fused CUDA kernels when available and a pure-PyTorch path everywhere."""

from speechbrain_mambadapter.mamba.mamba import (
    BiMambaExt,
    BiMambaInner,
    Mamba,
    build_mamba,
    relative_to_absolute_lengths,
    reverse_padded,
)
from speechbrain_mambadapter.mamba.ops import (
    FUSED_KERNELS_AVAILABLE,
    causal_conv1d_ref,
    mamba_inner_ref,
    use_fused_path,
)
from speechbrain_mambadapter.mamba.scan import selective_scan_ref

__all__ = [
    "BiMambaExt",
    "BiMambaInner",
    "FUSED_KERNELS_AVAILABLE",
    "Mamba",
    "build_mamba",
    "causal_conv1d_ref",
    "mamba_inner_ref",
    "relative_to_absolute_lengths",
    "reverse_padded",
    "selective_scan_ref",
    "use_fused_path",
]
