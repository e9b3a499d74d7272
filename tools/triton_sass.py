"""Compile this package's Triton selective-scan kernels for a GPU that is not here, and count their SASS.

Kernel work needs counts more often than it needs a GPU: how many instructions one chunk of the
scan takes, how many of them are exponentials (MUFU) or cross-lane shuffles (SHFL), how many
registers a thread needs and whether it spills. Triton compiles for any target without a driver,
and its wheel carries ``ptxas`` and ``cuobjdump``, so this runs on the CPU machine::

    python tools/triton_sass.py                    # the adapter's shape, sm_90a (H100/H200)
    python tools/triton_sass.py --arch 100 --dtype fp32 --json counts.json

For each pass (inference forward, training forward, backward; the summary pass ``MODE 0`` and the
output pass ``MODE 1``) it compiles the kernel as ``triton_scan.scan_fwd``/``scan_bwd`` would launch
it at the given shape (the same tile sizes, register cap and constants; integers equal to 1 as
constants and multiples of 16 marked divisible, as Triton specialises them), then prints the
registers per thread, the local-memory (spill) instructions, and, for the whole kernel and for its
largest loop (the chunk loop), the instruction count and the MUFU, SHFL and FP32 arithmetic among
them, and the loop's instructions per (step, state, channel) element a thread holds. ``--tile
T,BD`` counts other tile sizes. ``--kernels FILE`` counts a candidate design instead: a Python file
that defines ``_scan_fwd_kernel`` and/or ``_scan_bwd_kernel`` with the package's signatures (copy
them from ``speechbrain_mambadapter/mamba/triton_scan.py`` and change the copy); the passes it does
not define are the package's. These are static counts of the compiled code, not timings:
``benchmarks/scan_kernels.py`` measures speed on a GPU.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from speechbrain_mambadapter.mamba import triton_scan  # noqa: E402

_SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*(?:/\*.*)?$")
_BRANCH = re.compile(r"\bBRA(?:\.\S+)?\s+(0x[0-9a-f]+)")
CLASSES = {
    "MUFU": ("MUFU",),
    "SHFL": ("SHFL",),
    "FP32": ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP"),
    "LDG": ("LDG",),
    "STG": ("STG",),
    "local (spills)": ("LDL", "STL"),
}


def opcode(instruction):
    """``@P0 FFMA.FTZ R1, ...`` -> ``FFMA``."""
    words = instruction.split()
    word = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words[0] if words else "")
    return word.split(".")[0]


def parse_sass(text):
    """The instructions of one function's SASS listing (``cuobjdump -sass``), in order, as
    ``(address, text)``."""
    instructions = []
    for line in text.splitlines():
        match = _SASS_LINE.match(line)
        if match:
            instructions.append((int(match.group(1), 16), match.group(2)))
    return instructions


def largest_loop(instructions):
    """The instructions of the longest loop (a branch back to an earlier address: the chunk loop),
    or None."""
    index = {address: i for i, (address, _) in enumerate(instructions)}
    best = None
    for i, (address, text) in enumerate(instructions):
        branch = _BRANCH.search(text)
        if branch and int(branch.group(1), 16) < address and int(branch.group(1), 16) in index:
            start = index[int(branch.group(1), 16)]
            if best is None or i + 1 - start > best[1] - best[0]:
                best = (start, i + 1)
    return [text for _, text in instructions[best[0] : best[1]]] if best else None


def count(instructions):
    ops = [opcode(i) for i in instructions]
    return {
        "instructions": len(ops),
        **{name: sum(op in kinds for op in ops) for name, kinds in CLASSES.items()},
    }


def _spec(value):
    """How Triton specialises one integer argument: a constant when it is 1, else its type with
    the divisibility mark when it is a multiple of 16."""
    if value == 1:
        return "constexpr", 1, False
    return "i32", None, value % 16 == 0


def compile_kernel(kernel, pointers, integers, constants, arch, num_warps, maxnreg=None):
    """Compile ``kernel`` for ``cuda:arch`` as a launch with these arguments would; return the
    compiled kernel. ``pointers``: name -> element type (``"bf16"``...), all 16-byte aligned;
    ``integers``: name -> value; ``constants``: the compile-time arguments."""
    names = kernel.arg_names
    signature, constexprs, attrs = {}, {}, {}
    for index, name in enumerate(names):
        if name in pointers:
            signature[name] = "*" + pointers[name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in integers:
            kind, constant, divisible = _spec(integers[name])
            signature[name] = kind
            if constant is not None:
                constexprs[(index,)] = constant
            elif divisible:
                attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "constexpr"
            constexprs[(index,)] = constants[name]
    options = {"num_warps": num_warps}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def sass_of(compiled):
    """The SASS listing of a compiled kernel (``cuobjdump -sass``) and its registers per thread."""
    tool = triton.knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([tool, "-sass", cubin.name], check=True, capture_output=True, text=True).stdout
        usage = subprocess.run([tool, "-res-usage", cubin.name], check=True, capture_output=True, text=True)
    registers = re.search(r"REG:(\d+)", usage.stdout)
    return sass, int(registers.group(1)) if registers else None


KERNEL_NAMES = ("_scan_fwd_kernel", "_scan_bwd_kernel")


def load_kernels(path):
    """The candidate kernels a Python file defines, ``{name: kernel}`` for the names in
    ``KERNEL_NAMES``."""
    names = runpy.run_path(str(path))
    found = {name: names[name] for name in KERNEL_NAMES if name in names}
    if not found:
        raise ValueError(
            f"--kernels {path} defines neither of {KERNEL_NAMES}: copy them from "
            "speechbrain_mambadapter/mamba/triton_scan.py, keep their names and signatures."
        )
    return found


def scan_passes(batch, length, d_inner, d_state, rank, dtype, kernels=None):
    """The scan kernels ``scan_fwd``/``scan_bwd`` launch at this shape: (name, kernel, pointer
    types, integers, constants, num_warps, maxnreg). ``B``/``C`` are column slices of ``x_proj``'s
    ``[batch, L, rank + 2 d_state]`` output, as in the Mamba block; the other tensors contiguous.
    ``kernels`` (``load_kernels``) replaces the package's kernels of those names."""
    kernels = {name: getattr(triton_scan, name) for name in KERNEL_NAMES} | dict(kernels or {})
    width = rank + 2 * d_state
    strides = {
        "s_ub": length * d_inner, "s_ul": d_inner, "s_ud": 1, "s_tb": length * d_inner, "s_tl": d_inner,
        "s_td": 1, "s_Bb": length * width, "s_Bl": width, "s_Bn": 1, "s_Cb": length * width, "s_Cl": width,
        "s_Cn": 1, "s_zb": length * d_inner, "s_zl": d_inner, "s_zd": 1, "s_Ad": d_state, "s_An": 1,
    }  # fmt: skip
    flags = dict(
        HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, NP=triton_scan.next_power_of_2(d_state)
    )
    f32 = ("A_ptr", "Dsk_ptr", "bias_ptr", "last_ptr", "states_ptr", "seg_ptr", "carry_ptr", "dlast_ptr")
    passes = []
    for training in (False, True):
        chunk, block_d, warps = triton_scan._config(d_inner, d_state, training)
        cap = triton_scan._MAXNREG["training" if training else "inference"]
        # Two segments, given: the device (which only sets how many segments to cut) is not asked.
        n_seg, seg_len = triton_scan._segments(
            batch, length, d_inner, block_d, chunk, warps, None, training, 2
        )
        integers = dict(strides, L=length, D=d_inner, N=d_state, seg_len=seg_len, n_seg=n_seg)
        common = dict(flags, T=chunk, BD=block_d, FAST=True, SEGMENTED=True)
        kernel = kernels["_scan_fwd_kernel"]
        pointers = {n: ("fp32" if n in f32 else dtype) for n in kernel.arg_names if n.endswith("_ptr")}
        stage = "training" if training else "inference"
        for mode in (0, 1):
            constants = dict(common, MODE=mode, SAVE_STATES=training and mode == 1)
            passes.append(
                (f"forward ({stage}), MODE {mode}", kernel, pointers, integers, constants, warps, cap)
            )
        if training:
            kernel = kernels["_scan_bwd_kernel"]
            pointers = {n: ("fp32" if n in f32 + ("dA_ptr", "dD_ptr", "dbias_ptr") else dtype)
                        for n in kernel.arg_names if n.endswith("_ptr")}  # fmt: skip
            integers = dict(integers, s_ob=length * d_inner, s_ol=d_inner, s_od=1)
            for mode in (0, 1):
                constants = dict(common, MODE=mode, HAS_DLAST=False)
                passes.append((f"backward, MODE {mode}", kernel, pointers, integers, constants, warps, cap))
    return passes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="32,1500,208,16", help="batch,L,d_inner,d_state")
    parser.add_argument("--rank", type=int, default=13, help="dt_rank: B and C follow it in x_proj's output")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    parser.add_argument("--tile", default=None, help="T,BD: other tile sizes (triton_scan._TUNING), one warp")
    parser.add_argument("--kernels", default=None, help="a Python file with candidate kernels (above)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    kernels = load_kernels(args.kernels) if args.kernels else None
    if args.tile:
        chunk, block_d = (int(v) for v in args.tile.split(","))
        triton_scan._TUNING.update(inference=(chunk, block_d, 1), training=(chunk, block_d, 1))
    shape = [int(v) for v in args.shape.split(",")]
    rows = []
    columns = "instructions / MUFU / SHFL / FP32 / spills"
    print(f"| pass | registers | kernel: {columns} | chunk loop: the same | loop per element |")
    print("|---|---:|---|---|---:|")
    for name, kernel, pointers, integers, constants, warps, cap in scan_passes(
        *shape, args.rank, args.dtype, kernels
    ):
        sass, registers = sass_of(
            compile_kernel(kernel, pointers, integers, constants, args.arch, warps, cap)
        )
        instructions = parse_sass(sass)
        loop = largest_loop(instructions)
        row = dict(
            name=name, registers=registers, kernel=count([text for _, text in instructions]),
            loop=count(loop) if loop else None,
            tile=dict(T=constants["T"], BD=constants["BD"], NP=constants["NP"], num_warps=warps, maxnreg=cap),
        )  # fmt: skip
        rows.append(row)
        cells = [
            " / ".join(str(c[k]) for k in ("instructions", "MUFU", "SHFL", "FP32", "local (spills)"))
            if c
            else "–"
            for c in (row["kernel"], row["loop"])
        ]
        # (step, state, channel) triples one thread holds per chunk: T x NP x BD over the 32 lanes
        row["elements_per_thread"] = pairs = (
            constants["T"] * constants["NP"] * constants["BD"] // (32 * warps)
        )
        per_element = f"{row['loop']['instructions'] / pairs:.1f}" if row["loop"] else "–"
        print(f"| {name} | {registers} | {cells[0]} | {cells[1]} | {per_element} |", flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(dict(shape=shape, dtype=args.dtype, arch=args.arch, rows=rows), indent=1)
        )
    return rows


if __name__ == "__main__":
    main()
