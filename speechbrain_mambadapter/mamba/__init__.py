"""Mamba blocks: Triton (or mamba-ssm) kernels on CUDA, a pure-PyTorch path everywhere."""

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
    TRITON_AVAILABLE,
    causal_conv1d_ref,
    mamba_inner_ref,
    select_backend,
    set_kernel_backend,
)
from speechbrain_mambadapter.mamba.scan import selective_scan_ref
from speechbrain_mambadapter.mamba.triton_ops import (
    causal_conv1d_cl,
    causal_conv1d_triton,
    selective_scan_cl,
    selective_scan_triton,
)

__all__ = [
    "BiMambaExt",
    "BiMambaInner",
    "FUSED_KERNELS_AVAILABLE",
    "Mamba",
    "TRITON_AVAILABLE",
    "build_mamba",
    "causal_conv1d_cl",
    "causal_conv1d_ref",
    "causal_conv1d_triton",
    "mamba_inner_ref",
    "relative_to_absolute_lengths",
    "reverse_padded",
    "select_backend",
    "selective_scan_cl",
    "selective_scan_ref",
    "selective_scan_triton",
    "set_kernel_backend",
]
