"""``tools/triton_sass.py``: the scan kernels compiled for sm_90a on a machine without a GPU, and
their SASS counted (the chunk loop found, its exponentials and shuffles counted)."""

import pytest

pytest.importorskip("triton")

from tests.scripts import load_script  # noqa: E402

sass = load_script("tools/triton_sass.py", "triton_sass")


def _tools_found():
    """Triton's wheel ships ptxas and cuobjdump; the knobs raise or give None without them."""
    try:
        return bool(sass.triton.knobs.nvidia.ptxas.path and sass.triton.knobs.nvidia.cuobjdump.path)
    except (AttributeError, RuntimeError, FileNotFoundError):
        return False


def test_parse_and_loop_of_a_listing():
    listing = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;                  /* 0x00000a0000017a02 */
        /*0010*/                   MUFU.EX2 R2, R3 ;                       /* 0x0000000300027308 */
        /*0020*/                   FFMA.FTZ R4, R2, R5, R4 ;               /* 0x0000000502047223 */
        /*0030*/                   SHFL.BFLY PT, R6, R4, 0x1, 0x1f ;       /* 0x0c201f0004067f89 */
        /*0040*/              @!P1 BRA 0x10 ;                              /* 0xffffffe400b49947 */
        /*0050*/                   EXIT ;                                  /* 0x000000000000794d */
        /*0060*/                   BRA 0x60;                               /* 0xfffffffc00fc7947 */
    """
    instructions = sass.parse_sass(listing)
    assert [a for a, _ in instructions] == [0, 16, 32, 48, 64, 80, 96]
    loop = sass.largest_loop(instructions)
    assert loop[0].startswith("MUFU") and loop[-1].startswith("@!P1 BRA")
    counts = sass.count(loop)
    assert (counts["instructions"], counts["MUFU"], counts["SHFL"], counts["FP32"]) == (4, 1, 1, 1)
    assert sass.opcode("@P0 FFMA.FTZ R1, R2, R3, R4") == "FFMA"


@pytest.mark.skipif(not _tools_found(), reason="this Triton has no ptxas / cuobjdump")
def test_the_training_summary_pass_compiles_for_sm90_and_has_a_chunk_loop():
    passes = {p[0]: p for p in sass.scan_passes(32, 1500, 208, 16, 13, "bf16")}
    assert len(passes) == 6
    name, kernel, pointers, integers, constants, warps, cap = passes["forward (training), MODE 0"]
    assert integers["s_ud"] == 1 and constants["T"] == 8
    listing, registers = sass.sass_of(
        sass.compile_kernel(kernel, pointers, integers, constants, 90, warps, cap)
    )
    loop = sass.largest_loop(sass.parse_sass(listing))
    counts = sass.count(loop)
    # One exponential per (step, state) a thread holds, T x NP / (32 / BD) = 8 x 16 / 4 = 32 of them,
    # and the softplus's two (x T steps): the loop must contain at least the 32.
    assert 0 < registers <= 255 and counts["MUFU"] >= 32 and counts["instructions"] > counts["MUFU"]


def test_candidate_kernels_replace_the_package_s(tmp_path):
    """``--kernels FILE``: the passes of the kernels the file defines use them, the others the
    package's; a file that defines neither is an error that names it."""
    candidate = tmp_path / "candidate.py"
    candidate.write_text(
        "from speechbrain_mambadapter.mamba.triton_scan import _scan_bwd_kernel as _scan_fwd_kernel\n"
    )
    kernels = sass.load_kernels(candidate)
    assert list(kernels) == ["_scan_fwd_kernel"]
    passes = {p[0]: p[1] for p in sass.scan_passes(32, 1500, 208, 16, 13, "bf16", kernels)}
    backward = sass.triton_scan._scan_bwd_kernel
    assert passes["forward (inference), MODE 1"] is backward and passes["backward, MODE 1"] is backward
    assert {p[1] for p in sass.scan_passes(32, 1500, 208, 16, 13, "bf16")} == {
        sass.triton_scan._scan_fwd_kernel, backward,
    }  # fmt: skip
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="empty.py defines neither"):
        sass.load_kernels(empty)
