"""The direct launch of compiled Triton kernels (``mamba/triton_launch.py``), on CPU.

A stand-in for a ``@triton.jit`` kernel records how it is called, so the cache's logic is checked
without a GPU: the first call of a specialisation goes through Triton, the next ones hand the
compiled kernel every parameter in signature order, and a call Triton would compile another kernel
for is never served from the cache. ``tests/gpu/test_triton_launch_cuda.py`` runs the real kernels.
"""

import types

import pytest
import torch

pytest.importorskip("triton")
from triton import knobs  # noqa: E402

from speechbrain_mambadapter.mamba import triton_launch  # noqa: E402

if triton_launch._knobs is None:
    pytest.skip("this Triton has no knobs module: every launch goes through Triton", allow_module_level=True)


class FakeCompiled:
    function = "cu-function"
    packed_metadata = ("warps", "ctas", "smem")

    def __init__(self):
        self.runs = []

    def run(self, *args):
        self.runs.append(args)


class FakeJIT:
    """Records ``kernel[grid](*args, **meta)`` and returns one compiled kernel per specialisation."""

    def __init__(self, names):
        self.params = [types.SimpleNamespace(name=n) for n in names]
        self.calls = []
        self.compiled = {}

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.calls.append((grid, args, meta))
            return self.compiled.setdefault(triton_launch._specialisation(args), FakeCompiled())

        return launch


@pytest.fixture
def launcher(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
    monkeypatch.setattr(triton_launch, "_device_and_stream", lambda: (0, 1234))
    return triton_launch.Launcher(FakeJIT(["x_ptr", "out_ptr", "n", "s_x", "BLOCK", "FLAG"]))


def test_first_call_through_triton_then_direct(launcher):
    x, out = torch.zeros(64), torch.zeros(64)
    launcher[(4,)](x, out, 64, 1, BLOCK=32, FLAG=True, num_warps=2)
    assert len(launcher.kernel.calls) == 1 and launcher.cache_size() == 1
    launcher[(5, 2)](x, out, 64, 1, BLOCK=32, FLAG=True, num_warps=2)
    assert len(launcher.kernel.calls) == 1, "the second call of a specialisation went through Triton"
    (compiled,) = launcher.kernel.compiled.values()
    (run,) = compiled.runs
    # grid padded to 3-D, the stream, the compiled handles, no launch metadata or hooks, then every
    # parameter in signature order with the compile-time ones from the keywords.
    assert run[:9] == (5, 2, 1, 1234, "cu-function", FakeCompiled.packed_metadata, None, None, None)
    assert run[9:11] == (x, out) and run[11:] == (64, 1, 32, True)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda a: {**a, "x": torch.zeros(65)[1:]}, id="pointer-not-16-byte-aligned"),
        pytest.param(lambda a: {**a, "x": torch.zeros(64, dtype=torch.float16)}, id="dtype"),
        pytest.param(lambda a: {**a, "n": 48}, id="int-divisible-by-16"),
        pytest.param(lambda a: {**a, "s_x": 3}, id="int-no-longer-1"),
        pytest.param(lambda a: {**a, "n": 2**31 + 16}, id="int-needs-64-bits"),
        pytest.param(lambda a: {**a, "s_x": None}, id="none"),
        pytest.param(lambda a: {**a, "BLOCK": 64}, id="constexpr"),
        pytest.param(lambda a: {**a, "num_warps": 4}, id="option"),
    ],
)
def test_another_specialisation_goes_through_triton(launcher, change):
    base = dict(x=torch.zeros(64), out=torch.zeros(64), n=63, s_x=1, BLOCK=32, FLAG=True, num_warps=2)

    def call(a):
        meta = dict(BLOCK=a["BLOCK"], FLAG=a["FLAG"], num_warps=a["num_warps"])
        launcher[(1,)](a["x"], a["out"], a["n"], a["s_x"], **meta)

    call(base)
    call(change(base))
    assert len(launcher.kernel.calls) == 2
    assert launcher.cache_size() == 2


def test_triton_path_when_disabled_or_hooked(launcher, monkeypatch):
    x, out = torch.zeros(64), torch.zeros(64)
    monkeypatch.setattr(triton_launch, "_DEFAULT_DIRECT", False)  # an unchecked Triton version
    for mode in ("triton", None):  # None: the default
        if mode is None:
            monkeypatch.delenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH")
        else:
            monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", mode)
        for _ in range(2):
            launcher[(1,)](x, out, 64, 1, BLOCK=32, FLAG=True)
    assert len(launcher.kernel.calls) == 4 and launcher.cache_size() == 0
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
    launcher[(1,)](x, out, 64, 1, BLOCK=32, FLAG=True)
    assert launcher.cache_size() == 1
    hook = lambda metadata: None  # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        launcher[(1,)](x, out, 64, 1, BLOCK=32, FLAG=True)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert len(launcher.kernel.calls) == 6, "a launch hook (a profiler) must see every launch"


def test_unknown_argument_types_are_not_cached(launcher):
    x, out = torch.zeros(64), torch.zeros(64)
    for _ in range(2):
        launcher[(1,)](x, out, 0.5, 1, BLOCK=32, FLAG=True)
    assert len(launcher.kernel.calls) == 2 and launcher.cache_size() == 0


def test_default_follows_the_checked_triton_versions(monkeypatch):
    """Unset, the switch follows the Triton version; "triton" and "direct" override it; a typo is
    an error that names the variable, not a silent fallback."""
    assert triton_launch._default_direct("3.6.0") and triton_launch._default_direct("3.8.0+git1234")
    assert not triton_launch._default_direct("3.5.1") and not triton_launch._default_direct("3.60.0")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", raising=False)
    for default in (True, False):
        monkeypatch.setattr(triton_launch, "_DEFAULT_DIRECT", default)
        assert triton_launch.direct_launch_enabled() is default
        monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "triton")
        assert triton_launch.direct_launch_enabled() is False
        monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
        assert triton_launch.direct_launch_enabled() is True
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # nothing compiled: Triton's own path
        assert triton_launch.direct_launch_enabled() is False
        monkeypatch.delenv("TRITON_INTERPRET")
        monkeypatch.delenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH")
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "Direct")
    with pytest.raises(ValueError, match="SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH='Direct'"):
        triton_launch.direct_launch_enabled()
