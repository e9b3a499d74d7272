"""Selective scan (Mamba-1's S6 recurrence) in Triton: forward and backward, channels-last.

The tensors are the ones the Mamba block's linear layers produce, time-major and channels-last:
``u``, ``delta``, ``z`` and the output are ``[batch, L, D]``, ``B`` and ``C`` are ``[batch, L, N]``,
each with any strides (``B`` and ``C`` are usually column slices of ``x_proj``'s output), so the
block needs no transposes or copies around the scan. ``A`` is ``[D, N]`` (one real decay per channel
and state), ``D`` and ``delta_bias`` are ``[D]``. The state is fp32; inputs are bf16, fp16 or fp32.

Work decomposition. One program is one warp; it owns one batch row, ``BD`` channels (16 in
inference, 8 in training), all ``N`` states and one *segment* of time, which it walks through in
chunks of ``T`` steps (8 at 16 states). A chunk is one tile ``[T, N, BD]`` laid out so that a lane
holds one channel and a share of the states, and all T steps of those in registers: the decays
``exp(delta·A)`` and inputs ``delta·B·u`` of the chunk are formed at once from ``[T, BD]`` and
``[T, N]`` loads, the linear recurrence inside the chunk is an associative scan along time that never
leaves the thread (the state entering the chunk is folded into its first step, so only the states
are scanned, not the products of the decays), and the sum over states that gives ``y`` needs a
shuffle or two. The forward pass issues the next chunk's loads before computing the current one, so
a warp's arithmetic hides its own memory latency. Time is cut into segments until enough programs
are in flight (small batches above all): a first pass computes each segment's end state from a zero
start and its total decay, one associative scan over the segments (``_segment_carry_kernel``) gives
the state entering each, and the output pass starts from it. The backward pass runs the same way in
reverse time, from the chunk-start states the forward pass saved (``[batch, n_chunks, D, N]``,
fp32); its reverse scan is a forward scan over time-flipped tiles (register renames); ``dB`` and
``dC`` (sums over channels) are written as per-channel-block partial sums and added up afterwards.

The functions here take and return channels-last tensors; :mod:`speechbrain_mambadapter.mamba.triton_ops`
registers them as ``torch.library`` custom ops and gives them mamba-ssm's signature.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import functools
import os

import torch

from speechbrain_mambadapter.mamba.triton_launch import Launcher

try:
    import triton
    import triton.language as tl
except ImportError:  # the package works without Triton; ops.py falls back to the reference
    triton = tl = None

TRITON_AVAILABLE = triton is not None
# The interpreter (TRITON_INTERPRET=1, the CPU tests) runs no PTX: there the kernels take
# tl.exp2 and tl.log instead of the approximate MUFU instructions.
_FAST_MATH = os.environ.get("TRITON_INTERPRET") != "1"

# benchmarks/scan_kernels.py --sweep sets these to time other tile sizes: (T, BD, num_warps).
_TUNING = {"inference": None, "training": None}
# Time is cut into segments until about this many one-warp programs per multiprocessor are in
# flight, for the inference forward and for training (benchmarks/scan_kernels.py --sweep on the
# H200 over B = 1, 8, 32: 16 beat 8 and 32 in inference, 32 beat 8 and 16 in training).
_WARPS_PER_SM = {"inference": 16, "training": 32}
_MAX_SEGMENTS = 64
# A cap on each thread's registers (ptxas's maxrregcount), for the inference forward and for
# training: fewer registers, more warps in flight, some values spilled. None: the compiler's choice.
# benchmarks/scan_profile.py --maxnreg on the H200 (bf16, L=1500, D=208, N=16): 168 in training took
# forward + backward from 1091 / 332 / 86.0 µs to 1073 / 295 / 90.3 at B = 32 / 8 / 1; no cap was
# the best in inference (128 and 192 were slower).
_MAXNREG = {"inference": None, "training": 168}


def next_power_of_2(n):
    """Smallest power of two >= ``n`` (and >= 2).

    Example
    -------
    >>> next_power_of_2(5), next_power_of_2(16), next_power_of_2(1)
    (8, 16, 2)
    """
    return max(2, 1 << (int(n) - 1).bit_length())


def _config(d_inner, d_state, training):
    """Tile sizes ``(T, BD, num_warps)`` of one program: T time steps × all states × BD channels.

    One warp per program: its lanes hold BD channels × 32/BD groups of states, each thread the
    rest of the states and all T steps in registers. So the scan over time and most of the sum
    over states stay inside a thread, and no warp waits on another. The defaults are the tiles
    ``benchmarks/scan_kernels.py --sweep`` found fastest at 16 states (inference 8 steps × 16
    channels, training 8 × 8); other state counts keep each thread's share of a tile as large.
    """
    tuned = _TUNING["training" if training else "inference"]
    if tuned is not None:
        return tuned
    n_pad = next_power_of_2(d_state)
    if training:
        return max(2, min(16, 128 // n_pad)), min(8, next_power_of_2(d_inner)), 1
    return max(2, min(16, 128 // n_pad)), min(16 if n_pad <= 16 else 8, next_power_of_2(d_inner)), 1


def saved_states_shape(batch, length, d_inner, d_state):
    """Shape of the chunk-start states the forward pass saves for the backward pass.

    Example
    -------
    >>> saved_states_shape(2, 100, 32, 16)
    (2, 13, 32, 16)
    """
    chunk = _config(d_inner, d_state, training=True)[0]
    return (batch, -(-length // chunk), d_inner, next_power_of_2(d_state))


@functools.cache
def _sm_count(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_wanted(device, warps, training):
    """Enough programs to keep every multiprocessor busy (a fixed 8 off CUDA)."""
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _WARPS_PER_SM["training" if training else "inference"] * _sm_count(index) // warps


def _segments(batch, length, d_inner, block_d, chunk, warps, device, training, segments):
    """Number of time segments and steps per segment (a multiple of ``chunk``)."""
    n_chunks = -(-length // chunk)
    if segments <= 0:
        base = batch * -(-d_inner // block_d)
        segments = -(-_programs_wanted(device, warps, training) // base)
        # A segment below 2 chunks costs more in summaries than it gains in parallelism.
        segments = min(segments, max(1, n_chunks // 2))
    segments = max(1, min(segments, n_chunks, _MAX_SEGMENTS))
    per_segment = -(-n_chunks // segments)
    return -(-n_chunks // per_segment), per_segment * chunk


if TRITON_AVAILABLE:
    _LOG2E = tl.constexpr(1.4426950408889634)

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _first(a, b):
        return a

    @triton.jit
    def _last(a, b):
        return b

    _LN2 = tl.constexpr(0.6931471805599453)

    @triton.jit
    def _exp2(x, FAST: tl.constexpr):
        # One MUFU.EX2 instruction, results below 2^-126 flushed to 0 (these are decays and
        # gates). tl.exp2 keeps subnormal results, at three more instructions per call: a
        # quarter of the scan's loop.
        if FAST:
            return tl.inline_asm_elementwise(
                "ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
            )
        else:
            return tl.exp2(x)

    @triton.jit
    def _softplus(x, FAST: tl.constexpr):
        if FAST:
            # ln(1 + e^x) = ln 2 · log2(1 + 2^(x log2 e)), two MUFU instructions; tl.log is a
            # polynomial of some thirty.
            lg = tl.inline_asm_elementwise(
                "lg2.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + _exp2(x * _LOG2E, FAST)], dtype=tl.float32,
                is_pure=True, pack=1,
            )  # fmt: skip
            return tl.where(x <= 20.0, lg * _LN2, x)
        else:
            return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _delta(dt_ptr, off, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
        """Load a ``[T, BD]`` tile of delta and return (delta after bias and softplus, the raw
        value it was computed from); 0 where masked, so that padded steps keep the state."""
        raw = tl.load(dt_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw = raw + bias[None, :]
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw, FAST)
        return tl.where(mask, dt, 0.0), raw

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, Dsk_ptr, z_ptr, bias_ptr,
        out_ptr, last_ptr, states_ptr, seg_ptr, carry_ptr,
        L, D, N, seg_len, n_seg,
        s_ub, s_ul, s_ud, s_tb, s_tl, s_td, s_Bb, s_Bl, s_Bn, s_Cb, s_Cl, s_Cn,
        s_zb, s_zl, s_zd, s_Ad, s_An,
        MODE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr, SEGMENTED: tl.constexpr,
        T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, FAST: tl.constexpr,
    ):  # fmt: skip
        """MODE 0: each segment's (total decay, end state from zero) into ``seg``.
        MODE 1: the output, the last state and, if SAVE_STATES, every chunk's start state; with
        SEGMENTED, each segment starts from the state ``_segment_carry_kernel`` left in ``carry``."""
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        offs_n = tl.arange(0, NP)
        mask_n = offs_n < N
        offs_t = tl.arange(0, T)
        mask_nd = mask_n[:, None] & mask_d[None, :]
        A = tl.load(A_ptr + offs_n[:, None] * s_An + offs_d[None, :] * s_Ad, mask=mask_nd, other=0.0)
        A2 = A.to(tl.float32) * _LOG2E  # [NP, BD]; exp(dt A) = exp2(dt A log2 e)
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        skip = tl.zeros([BD], dtype=tl.float32)
        if HAS_D:
            skip = tl.load(Dsk_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        # Summaries and states are [.., D, NP] fp32, contiguous.
        nd_off = offs_d[None, :] * NP + offs_n[:, None]
        h = tl.zeros([NP, BD], dtype=tl.float32)
        if MODE == 1 and SEGMENTED:
            h = tl.load(carry_ptr + (pid_b * n_seg + pid_s) * D * NP + nd_off, mask=mask_nd, other=0.0)
        dt_sum = tl.zeros([BD], dtype=tl.float32)
        t_start = pid_s * seg_len
        t_stop = tl.minimum(t_start + seg_len, L)
        u_base = u_ptr + pid_b * s_ub + offs_d[None, :] * s_ud
        dt_base = dt_ptr + pid_b * s_tb + offs_d[None, :] * s_td
        B_base = B_ptr + pid_b * s_Bb + offs_n[None, :] * s_Bn
        C_base = C_ptr + pid_b * s_Cb + offs_n[None, :] * s_Cn
        # Software pipelining by hand: the loads of chunk c + T are issued before chunk c is
        # computed, so that one warp's compute hides its own memory latency.
        t = t_start + offs_t
        next_td = (t < t_stop)[:, None] & mask_d[None, :]
        next_tn = (t < t_stop)[:, None] & mask_n[None, :]
        n_dt = tl.load(dt_base + t[:, None] * s_tl, mask=next_td, other=0.0)
        n_u = tl.load(u_base + t[:, None] * s_ul, mask=next_td, other=0.0)
        n_B = tl.load(B_base + t[:, None] * s_Bl, mask=next_tn, other=0.0)
        n_C = n_B
        n_z = n_u
        if MODE == 1:
            n_C = tl.load(C_base + t[:, None] * s_Cl, mask=next_tn, other=0.0)
            if HAS_Z:
                z_base = z_ptr + pid_b * s_zb + offs_d[None, :] * s_zd
                n_z = tl.load(z_base + t[:, None] * s_zl, mask=next_td, other=0.0)
        for c in range(t_start, t_stop, T):
            t = c + offs_t
            mask_td = (t < t_stop)[:, None] & mask_d[None, :]
            raw = n_dt.to(tl.float32)
            u = n_u.to(tl.float32)
            Bt = n_B.to(tl.float32)
            Ct = n_C.to(tl.float32)
            zt = n_z.to(tl.float32)
            next_td = (t + T < t_stop)[:, None] & mask_d[None, :]
            next_tn = (t + T < t_stop)[:, None] & mask_n[None, :]
            n_dt = tl.load(dt_base + (t + T)[:, None] * s_tl, mask=next_td, other=0.0)
            n_u = tl.load(u_base + (t + T)[:, None] * s_ul, mask=next_td, other=0.0)
            n_B = tl.load(B_base + (t + T)[:, None] * s_Bl, mask=next_tn, other=0.0)
            if MODE == 1:
                n_C = tl.load(C_base + (t + T)[:, None] * s_Cl, mask=next_tn, other=0.0)
                if HAS_Z:
                    n_z = tl.load(z_base + (t + T)[:, None] * s_zl, mask=next_td, other=0.0)
            if HAS_BIAS:
                raw = raw + bias[None, :]
            dt = raw
            if SOFTPLUS:
                dt = _softplus(raw, FAST)
            dt = tl.where(mask_td, dt, 0.0)
            if SAVE_STATES:
                chunk_base = states_ptr + ((pid_b * tl.cdiv(L, T) + c // T) * D) * NP
                tl.store(chunk_base + nd_off, h, mask=mask_nd)
            a = _exp2(dt[:, None, :] * A2[None, :, :], FAST)  # [T, NP, BD]
            bx = (dt * u)[:, None, :] * Bt[:, :, None]
            # The state entering the chunk is folded into its first step, so the scan's second
            # output is the state itself and its first (the decays' products) is dead code.
            bx = tl.where(offs_t[:, None, None] == 0, bx + a * h[None, :, :], bx)
            _, hs = tl.associative_scan((a, bx), 0, _combine)
            # Padded steps have decay 1 and input 0, so the last row is the chunk's end state
            # (a reduction along the in-thread time axis that keeps its last element: no arithmetic).
            h = tl.reduce(hs, 0, _last)
            if MODE == 0:
                dt_sum += tl.sum(dt, axis=0)
            else:
                y = tl.sum(hs * Ct[:, :, None], axis=1)  # [T, BD]
                if HAS_D:
                    y += skip[None, :] * u
                if HAS_Z:
                    y *= zt * tl.sigmoid(zt)
                out_off = (pid_b * L + t[:, None]) * D + offs_d[None, :]
                tl.store(out_ptr + out_off, y.to(out_ptr.dtype.element_ty), mask=mask_td)
        if MODE == 0:
            base = seg_ptr + ((pid_b * n_seg + pid_s) * 2) * D * NP
            tl.store(base + nd_off, _exp2(A2 * dt_sum[None, :], FAST), mask=mask_nd)
            tl.store(base + D * NP + nd_off, h, mask=mask_nd)
        else:
            if pid_s == n_seg - 1:
                tl.store(last_ptr + pid_b * D * NP + nd_off, h, mask=mask_nd)

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, Dsk_ptr, z_ptr, bias_ptr,
        grad_out_ptr, dlast_ptr, states_ptr, seg_ptr, carry_ptr,
        du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
        L, D, N, seg_len, n_seg,
        s_ub, s_ul, s_ud, s_tb, s_tl, s_td, s_Bb, s_Bl, s_Bn, s_Cb, s_Cl, s_Cn,
        s_zb, s_zl, s_zd, s_Ad, s_An, s_ob, s_ol, s_od,
        MODE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, SEGMENTED: tl.constexpr,
        T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, FAST: tl.constexpr,
    ):  # fmt: skip
        """Reverse-time pass. With g[t] = dLoss/dh[t] (the full gradient reaching the state),
        ``g[t] = C[t] dy[t] + a[t+1] g[t+1]``: a reverse scan over (a[t+1], C[t] dy[t]).

        MODE 0: each segment's (product of a[t+1] over it, g at its first step from zero).
        MODE 1: all gradients. du, ddelta (raw, before bias and softplus) and dz are written in
        place; dB and dC as per-channel-block partial sums ``[n_dblocks, batch, L, NP]``;
        dA, dD and ddelta_bias as per-(batch, segment) partial sums.
        """
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        offs_n = tl.arange(0, NP)
        mask_n = offs_n < N
        offs_t = tl.arange(0, T)
        mask_nd = mask_n[:, None] & mask_d[None, :]
        A = tl.load(A_ptr + offs_n[:, None] * s_An + offs_d[None, :] * s_Ad, mask=mask_nd, other=0.0)
        A = A.to(tl.float32)
        A2 = A * _LOG2E
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        skip = tl.zeros([BD], dtype=tl.float32)
        if HAS_D:
            skip = tl.load(Dsk_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        nd_off = offs_d[None, :] * NP + offs_n[:, None]
        # gc: gradient reaching the state just after the current chunk, g[chunk end + 1].
        gc = tl.zeros([NP, BD], dtype=tl.float32)
        if MODE == 1:
            if SEGMENTED:
                gc = tl.load(carry_ptr + (pid_b * n_seg + pid_s) * D * NP + nd_off, mask=mask_nd, other=0.0)
            elif HAS_DLAST:
                gc = tl.load(dlast_ptr + pid_b * D * NP + nd_off, mask=mask_nd, other=0.0)
        dtn_sum = tl.zeros([BD], dtype=tl.float32)
        dA_acc = tl.zeros([NP, BD], dtype=tl.float32)
        dD_acc = tl.zeros([T, BD], dtype=tl.float32)
        dbias_acc = tl.zeros([T, BD], dtype=tl.float32)
        t_start = pid_s * seg_len
        n_chunks = tl.cdiv(tl.minimum(t_start + seg_len, L) - t_start, T)
        for i in range(0, n_chunks):
            c = t_start + (n_chunks - 1 - i) * T
            t = c + offs_t
            mask_t = t < L
            mask_td = mask_t[:, None] & mask_d[None, :]
            mask_tn = mask_t[:, None] & mask_n[None, :]
            td_off = t[:, None] * s_tl + offs_d[None, :] * s_td + pid_b * s_tb
            mask_next = (t + 1 < L)[:, None] & mask_d[None, :]
            # a[t+1]: delta one step later; past the last step the decay is 1 (g[L] = dlast).
            dtn, _ = _delta(dt_ptr, td_off + s_tl, mask_next, bias, HAS_BIAS, SOFTPLUS, FAST)
            grad_out = tl.load(grad_out_ptr + pid_b * s_ob + t[:, None] * s_ol + offs_d[None, :] * s_od,
                           mask=mask_td, other=0.0).to(tl.float32)  # fmt: skip
            Ct = tl.load(C_ptr + pid_b * s_Cb + t[:, None] * s_Cl + offs_n[None, :] * s_Cn,
                         mask=mask_tn, other=0.0).to(tl.float32)  # fmt: skip
            dy = grad_out
            if HAS_Z:
                z = tl.load(z_ptr + pid_b * s_zb + t[:, None] * s_zl + offs_d[None, :] * s_zd,
                            mask=mask_td, other=0.0).to(tl.float32)  # fmt: skip
                z_sig = tl.sigmoid(z)
                dy = grad_out * z * z_sig
            an = _exp2(dtn[:, None, :] * A2[None, :, :], FAST)  # [T, NP, BD]
            x = Ct[:, :, None] * dy[:, None, :]
            # A reverse scan written as a forward one over flipped tiles: the flips are register
            # renames (time is held in-thread), while reverse=True compiles to warp shuffles.
            # The gradient entering from the next chunk is folded into the last step (as the
            # forward pass folds the entering state into the first).
            x = tl.where(offs_t[:, None, None] == T - 1, x + an * gc[None, :, :], x)
            _, g = tl.associative_scan((tl.flip(an, 0), tl.flip(x, 0)), 0, _combine)
            g = tl.flip(g, 0)
            gc = tl.reduce(g, 0, _first)
            if MODE == 0:
                dtn_sum += tl.sum(dtn, axis=0)
            else:
                dt, raw = _delta(dt_ptr, td_off, mask_td, bias, HAS_BIAS, SOFTPLUS, FAST)
                u = tl.load(u_ptr + pid_b * s_ub + t[:, None] * s_ul + offs_d[None, :] * s_ud,
                            mask=mask_td, other=0.0).to(tl.float32)  # fmt: skip
                Bt = tl.load(B_ptr + pid_b * s_Bb + t[:, None] * s_Bl + offs_n[None, :] * s_Bn,
                             mask=mask_tn, other=0.0).to(tl.float32)  # fmt: skip
                h0 = tl.load(states_ptr + ((pid_b * tl.cdiv(L, T) + c // T) * D) * NP + nd_off,
                             mask=mask_nd, other=0.0)  # fmt: skip
                a = _exp2(dt[:, None, :] * A2[None, :, :], FAST)
                dtu = dt * u
                bx = dtu[:, None, :] * Bt[:, :, None]
                bx0 = tl.where(offs_t[:, None, None] == 0, bx + a * h0[None, :, :], bx)
                _, hs = tl.associative_scan((a, bx0), 0, _combine)
                if HAS_Z:
                    y = tl.sum(hs * Ct[:, :, None], axis=1) + skip[None, :] * u
                    dz = grad_out * y * z_sig * (1.0 + z * (1.0 - z_sig))
                    tl.store(dz_ptr + (pid_b * L + t[:, None]) * D + offs_d[None, :],
                             dz.to(dz_ptr.dtype.element_ty), mask=mask_td)  # fmt: skip
                dD_acc += dy * u
                # Gradient w.r.t. delta·A: g · a · h[t-1] = g · (h[t] - delta B u).
                d_log_a = g * (hs - bx)
                dA_acc += tl.sum(d_log_a * dt[:, None, :], axis=0)
                gB = tl.sum(g * Bt[:, :, None], axis=1)  # [T, BD]
                ddt = tl.sum(d_log_a * A[None, :, :], axis=1) + gB * u
                du = gB * dt + skip[None, :] * dy
                if SOFTPLUS:
                    ddt = ddt * tl.sigmoid(raw)
                ddt = tl.where(mask_td, ddt, 0.0)
                dbias_acc += ddt
                td_out = (pid_b * L + t[:, None]) * D + offs_d[None, :]
                tl.store(du_ptr + td_out, du.to(du_ptr.dtype.element_ty), mask=mask_td)
                tl.store(ddt_ptr + td_out, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_td)
                part_off = ((pid_d * tl.num_programs(1) + pid_b) * L + t[:, None]) * NP + offs_n[None, :]
                tl.store(dB_ptr + part_off, tl.sum(g * dtu[:, None, :], axis=2), mask=mask_tn)
                tl.store(dC_ptr + part_off, tl.sum(hs * dy[:, None, :], axis=2), mask=mask_tn)
        if MODE == 0:
            base = seg_ptr + ((pid_b * n_seg + pid_s) * 2) * D * NP
            tl.store(base + nd_off, _exp2(A2 * dtn_sum[None, :], FAST), mask=mask_nd)
            tl.store(base + D * NP + nd_off, gc, mask=mask_nd)
        else:
            row = pid_b * n_seg + pid_s
            tl.store(dA_ptr + row * D * NP + nd_off, dA_acc, mask=mask_nd)
            tl.store(dD_ptr + row * D + offs_d, tl.sum(dD_acc, axis=0), mask=mask_d)
            tl.store(dbias_ptr + row * D + offs_d, tl.sum(dbias_acc, axis=0), mask=mask_d)

    @triton.jit
    def _segment_carry_kernel(
        seg_ptr, carry_ptr, dlast_ptr, D, n_seg,
        REVERSE: tl.constexpr, HAS_DLAST: tl.constexpr, SP: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    ):  # fmt: skip
        """Combine the segments' summaries into the state entering each segment, all at once: an
        associative scan over the segment axis (reverse-time in the backward pass, where the
        gradient of the last state enters the last segment)."""
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1)
        offs_s = tl.arange(0, SP)
        offs_n = tl.arange(0, NP)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_s = offs_s < n_seg
        mask = mask_s[:, None, None] & (offs_d < D)[None, None, :]
        nd_off = offs_n[None, :, None] + offs_d[None, None, :] * NP
        base = ((pid_b * n_seg + offs_s) * 2 * D * NP)[:, None, None] + nd_off
        decay = tl.load(seg_ptr + base, mask=mask, other=1.0)
        value = tl.load(seg_ptr + base + D * NP, mask=mask, other=0.0)
        out = (pid_b * n_seg + offs_s)[:, None, None] * D * NP + nd_off
        first = tl.zeros([1, NP, BD], dtype=tl.float32)
        if HAS_DLAST:
            first = tl.load(dlast_ptr + pid_b * D * NP + nd_off, mask=(offs_d < D)[None, None, :], other=0.0)
        if REVERSE:
            value = tl.where((offs_s == n_seg - 1)[:, None, None], value + decay * first, value)
            _, acc = tl.associative_scan((decay, value), 0, _combine, reverse=True)
            # The segment before s starts its backward pass from the gradient entering s.
            tl.store(carry_ptr + out - D * NP, acc, mask=mask & (offs_s >= 1)[:, None, None])
            last = (offs_s == n_seg - 1)[:, None, None] & mask
            tl.store(carry_ptr + out, tl.broadcast_to(first, [SP, NP, BD]), mask=last)
        else:
            _, acc = tl.associative_scan((decay, value), 0, _combine)
            tl.store(carry_ptr + out + D * NP, acc, mask=mask & (offs_s + 1 < n_seg)[:, None, None])
            tl.store(
                carry_ptr + out,
                tl.zeros([SP, NP, BD], dtype=tl.float32),
                mask=mask & (offs_s == 0)[:, None, None],
            )

    _SCAN_FWD = Launcher(_scan_fwd_kernel)
    _SCAN_BWD = Launcher(_scan_bwd_kernel)
    _CARRY = Launcher(_segment_carry_kernel)


def _carry(seg, carry, dlast, d_inner, n_seg, n_pad, reverse):
    block_d = min(8, next_power_of_2(d_inner))
    grid = (triton.cdiv(d_inner, block_d), seg.shape[0])
    _CARRY[grid](
        seg, carry, dlast, d_inner, n_seg, REVERSE=reverse, HAS_DLAST=dlast is not None,
        SP=next_power_of_2(n_seg), BD=block_d, NP=n_pad, num_warps=4,
    )  # fmt: skip


def _register_cap(training):
    cap = _MAXNREG["training" if training else "inference"]
    return {} if cap is None else {"maxnreg": cap}


def _strides3(x):
    return (0, 0, 0) if x is None else tuple(x.stride())


def scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, segments=0):
    """Forward selective scan on channels-last tensors.

    Arguments
    ---------
    u, delta : torch.Tensor
        ``[batch, L, D]``, any strides.
    A : torch.Tensor
        ``[D, N]``.
    B, C : torch.Tensor
        ``[batch, L, N]``, any strides.
    D, delta_bias : torch.Tensor or None
        ``[D]``.
    z : torch.Tensor or None
        ``[batch, L, D]`` gate.
    delta_softplus : bool
        Apply softplus to ``delta + delta_bias``.
    save_states : bool
        Also return the chunk-start states the backward pass needs.
    segments : int
        Time segments; 0 chooses from the batch size and the GPU.

    Returns
    -------
    out : torch.Tensor
        ``[batch, L, D]`` contiguous, dtype of ``u``.
    last_state : torch.Tensor
        ``[batch, D, N]`` fp32.
    states : torch.Tensor
        ``saved_states_shape(...)`` fp32, or an empty tensor without ``save_states``.
    """
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    n_pad = next_power_of_2(d_state)
    chunk, block_d, warps = _config(d_inner, d_state, training=save_states)
    n_seg, seg_len = _segments(batch, length, d_inner, block_d, chunk, warps, u.device, save_states, segments)
    out = torch.empty(batch, length, d_inner, device=u.device, dtype=u.dtype)
    last = torch.empty(batch, d_inner, n_pad, device=u.device, dtype=torch.float32)
    states = (
        torch.empty(saved_states_shape(batch, length, d_inner, d_state), device=u.device, dtype=torch.float32)
        if save_states
        else last.new_empty(0)
    )
    seg = last.new_empty(batch, n_seg, 2, d_inner, n_pad) if n_seg > 1 else last.new_empty(0)
    carry = last.new_empty(batch, n_seg, d_inner, n_pad) if n_seg > 1 else last.new_empty(0)
    grid = (triton.cdiv(d_inner, block_d), batch, n_seg)
    args = (
        u, delta, A, B, C, D, z, delta_bias, out, last, states, seg, carry,
        length, d_inner, d_state, seg_len, n_seg,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *_strides3(z), *A.stride(),
    )  # fmt: skip
    flags = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), SEGMENTED=n_seg > 1, T=chunk, BD=block_d, NP=n_pad, FAST=_FAST_MATH,
        num_warps=warps, **_register_cap(training=save_states),
    )  # fmt: skip
    if n_seg > 1:
        _SCAN_FWD[(grid[0], batch, n_seg - 1)](*args, MODE=0, SAVE_STATES=False, **flags)
        _carry(seg, carry, None, d_inner, n_seg, n_pad, reverse=False)
    _SCAN_FWD[grid](*args, MODE=1, SAVE_STATES=bool(save_states), **flags)
    return out, last[..., :d_state].contiguous(), states


def scan_bwd(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, grad_out, dlast, segments=0
):  # fmt: skip
    """Backward selective scan on channels-last tensors (see ``scan_fwd``).

    Arguments
    ---------
    u, delta, A, B, C, D, z, delta_bias, delta_softplus
        The forward pass's inputs.
    states : torch.Tensor
        The chunk-start states ``scan_fwd(..., save_states=True)`` returned.
    grad_out : torch.Tensor
        ``[batch, L, D]`` gradient of the output, any strides.
    dlast : torch.Tensor or None
        ``[batch, D, N]`` gradient of the last state.
    segments : int
        Time segments; 0 chooses from the batch size and the GPU.

    Returns
    -------
    tuple
        ``du, ddelta, dA, dB, dC, dD, dz, ddelta_bias``: ``du``, ``ddelta``, ``dz`` ``[batch, L, D]``
        contiguous in the dtypes of their inputs, ``dB``, ``dC`` ``[batch, L, N]`` in B's and C's
        dtypes, ``dA`` ``[D, N]``, ``dD`` and ``ddelta_bias`` ``[D]`` fp32 (None where the input was None).
    """
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    n_pad = next_power_of_2(d_state)
    chunk, block_d, warps = _config(d_inner, d_state, training=True)
    n_seg, seg_len = _segments(batch, length, d_inner, block_d, chunk, warps, u.device, True, segments)
    n_dblk = triton.cdiv(d_inner, block_d)
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    du = torch.empty(batch, length, d_inner, device=dev, dtype=u.dtype)
    ddelta = torch.empty(batch, length, d_inner, device=dev, dtype=delta.dtype)
    dz = torch.empty(batch, length, d_inner, device=dev, dtype=z.dtype) if z is not None else du.new_empty(0)
    # Partial sums over each block of channels, in the inputs' dtype (half the traffic in bf16;
    # the reference rounds dB and dC to it as well), summed in fp32 below.
    dB_part = torch.empty(n_dblk, batch, length, n_pad, device=dev, dtype=B.dtype)
    dC_part = torch.empty(n_dblk, batch, length, n_pad, device=dev, dtype=C.dtype)
    dA_part = torch.empty(batch * n_seg, d_inner, n_pad, **f32)
    dD_part = torch.empty(batch * n_seg, d_inner, **f32)
    dbias_part = torch.empty(batch * n_seg, d_inner, **f32)
    seg = torch.empty(batch, n_seg, 2, d_inner, n_pad, **f32) if n_seg > 1 else dA_part.new_empty(0)
    carry = torch.empty(batch, n_seg, d_inner, n_pad, **f32) if n_seg > 1 else dA_part.new_empty(0)
    if dlast is not None:
        dlast = torch.nn.functional.pad(dlast.float(), (0, n_pad - d_state)).contiguous()
    grid = (n_dblk, batch, n_seg)
    args = (
        u, delta, A, B, C, D, z, delta_bias, grad_out, dlast, states, seg, carry,
        du, ddelta, dz, dB_part, dC_part, dA_part, dD_part, dbias_part,
        length, d_inner, d_state, seg_len, n_seg,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *_strides3(z), *A.stride(),
        *grad_out.stride(),
    )  # fmt: skip
    flags = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), HAS_DLAST=dlast is not None, SEGMENTED=n_seg > 1,
        T=chunk, BD=block_d, NP=n_pad, FAST=_FAST_MATH, num_warps=warps, **_register_cap(training=True),
    )  # fmt: skip
    if n_seg > 1:
        _SCAN_BWD[grid](*args, MODE=0, **flags)
        _carry(seg, carry, dlast, d_inner, n_seg, n_pad, reverse=True)
    _SCAN_BWD[grid](*args, MODE=1, **flags)
    dA = dA_part.sum(0)[:, :d_state]
    dB = dB_part.sum(0, dtype=torch.float32)[..., :d_state].to(B.dtype)
    dC = dC_part.sum(0, dtype=torch.float32)[..., :d_state].to(C.dtype)
    dD = dD_part.sum(0) if D is not None else None
    dbias = dbias_part.sum(0) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias


def flops_and_bytes(batch, length, d_inner, d_state, itemsize, has_z=True):
    """Rough floating-point operations and fewest bytes moved of one forward scan (for roofline).

    Example
    -------
    >>> flops, nbytes = flops_and_bytes(32, 1500, 208, 16, 2)
    >>> round(nbytes / 1e6)
    83
    """
    elems = batch * length * d_inner
    # per (b, t, d, n): exp, decay·state + input, input, C·state
    flops = elems * d_state * 6
    tensors = 4 if has_z else 3  # u, delta, (z), out
    nbytes = elems * itemsize * tensors + 2 * batch * length * d_state * itemsize
    return flops, nbytes


__all__ = [
    "TRITON_AVAILABLE",
    "flops_and_bytes",
    "next_power_of_2",
    "saved_states_shape",
    "scan_bwd",
    "scan_fwd",
]
