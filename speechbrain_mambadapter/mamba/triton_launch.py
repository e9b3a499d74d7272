"""Launching this package's Triton kernels with less Python work per call (on by default where checked).

``kernel[grid](*args, **meta)`` does, on every call, what only the first call of a kind needs:
it binds the arguments to the signature, works out what the kernel is specialised for, turns that
into a cache key (a string of the options among it), checks the kernel's globals and builds launch
metadata. An eager MambAdapter call at a small batch waits on the CPU, so this work counts
(``benchmarks/scan_profile.py --launch``).

``Launcher(kernel)`` keeps what Triton compiled, by the same specialisation: the first call of a
kind goes through Triton as before (which compiles if needed, then launches); later calls with the
same specialisation hand the compiled kernel its arguments directly. The specialisation key is
never coarser than Triton's own (a tensor's dtype and 16-byte alignment; an integer's 16-divisibility,
whether it equals 1, and its width), so a kernel is never reused for arguments Triton would have
compiled another one for.

The direct launch gives bit-identical results (``tests/gpu/test_triton_launch_cuda.py``) and, on
an H200 host, 12-29 % less CPU time per kernel call and 6-10 % per eager MambAdapter call at batch
1 (``benchmarks/scan_profile.py --launch``, the two paths alternated; ``benchmarks/RESULTS.md``).
It is on by default with the Triton versions whose launch call this was checked against
(``CHECKED_TRITON``); ``SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH=triton`` turns it off and ``=direct``
turns it on with any Triton that has ``knobs`` (3.4 on). Triton's way is also kept under the
interpreter (``TRITON_INTERPRET=1``: nothing compiled), while a launch hook is set (a profiler
such as Proton), and for argument types the key does not know.

Example
-------
>>> _specialisation((1, 16, 17, 2**40, None))
((True, False, 0), (False, True, 0), (False, False, 0), (False, True, 1), None)

Authors
 * speechbrain-mambadapter contributors 2026
"""

import os

import torch

try:
    import triton
    from triton import knobs as _knobs
except ImportError:  # no Triton, or a Triton before 3.4 (no knobs): Triton's own launch path
    triton = _knobs = None

LAUNCH_ENV = "SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH"  # "direct" or "triton"; unset: the default
LAUNCH_MODES = ("direct", "triton")
# Triton versions (major.minor) whose JITFunction.run launches a compiled kernel as ``_launch``
# does: 3.6 ran the GPU tests (tests/gpu/test_triton_launch_cuda.py), 3.8's source was read.
CHECKED_TRITON = ("3.6", "3.8")
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)


def _default_direct(version):
    return ".".join(version.split(".")[:2]) in CHECKED_TRITON


_DEFAULT_DIRECT = _knobs is not None and _default_direct(triton.__version__)


def direct_launch_enabled():
    """Whether ``Launcher`` may launch compiled kernels itself (else every call goes through Triton)."""
    mode = os.environ.get(LAUNCH_ENV, "")
    if mode and mode not in LAUNCH_MODES:
        raise ValueError(f"{LAUNCH_ENV}={mode!r}: use one of {LAUNCH_MODES}, or unset it for the default.")
    if _knobs is None or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return mode == "direct" or (not mode and _DEFAULT_DIRECT)


def _specialisation(args):
    """Per run-time argument, what Triton may specialise a kernel on; None if an argument's type is
    not one this key knows (the call then goes through Triton)."""
    key = []
    for a in args:
        kind = type(a)
        if kind is int:
            key.append((a == 1, a % 16 == 0, 0 if a in _INT32 else 1 if a in _INT64 else 2))
        elif a is None:
            key.append(None)
        elif isinstance(a, torch.Tensor):
            key.append((a.dtype, a.data_ptr() % 16 == 0))
        else:
            return None
    return tuple(key)


def _hooks_idle():
    """No launch hook is set (Triton's ``HookChain`` with no calls, or None in other versions)."""
    runtime = _knobs.runtime
    return all(
        hook is None or not getattr(hook, "calls", True)
        for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook)
    )


def _device_and_stream():
    # Triton's own way to the current stream (PyTorch's raw-stream getter): no Stream object made.
    device = torch.cuda.current_device()
    return device, triton.runtime.driver.active.get_current_stream(device)


class Launcher:
    """A ``@triton.jit`` kernel whose launches skip Triton's per-call dispatch once compiled.

    Called as the kernel is, ``Launcher(kernel)[grid](*args, **meta)``: run-time arguments by
    position, then every compile-time one (and options such as ``num_warps``) by name.

    Arguments
    ---------
    kernel : triton.runtime.JITFunction
        The kernel.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        # The interpreter's kernels have no ``params``; they are never launched directly.
        self.param_names = [p.name for p in getattr(kernel, "params", ())]
        self._compiled = {}

    def __getitem__(self, grid):
        return lambda *args, **meta: self._launch(grid, args, meta)

    def _launch(self, grid, args, meta):
        if not direct_launch_enabled():
            self.kernel[grid](*args, **meta)
            return
        spec = _specialisation(args)
        device, stream = _device_and_stream()
        key = (device, spec, tuple(meta.items()))
        entry = self._compiled.get(key) if spec is not None else None
        if entry is None or not _hooks_idle():
            compiled = self.kernel[grid](*args, **meta)
            if spec is not None and compiled is not None and key not in self._compiled:
                self._remember(key, compiled, len(args), meta)
            return
        compiled, constants = entry
        grid = tuple(grid) + (1, 1)
        compiled.run(
            grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata,
            None, None, None, *args, *constants,
        )  # fmt: skip

    def _remember(self, key, compiled, n_args, meta):
        # Triton hands the compiled kernel every parameter in signature order, compile-time ones
        # included; the ones after the positional arguments come from ``meta``.
        rest = self.param_names[n_args:]
        if self.param_names and all(name in meta for name in rest):
            self._compiled[key] = (compiled, tuple(meta[name] for name in rest))

    def cache_size(self):
        """Number of specialisations launched directly so far."""
        return len(self._compiled)


__all__ = ["CHECKED_TRITON", "LAUNCH_ENV", "LAUNCH_MODES", "Launcher", "direct_launch_enabled"]
