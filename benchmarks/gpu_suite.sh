#!/usr/bin/env bash
# Every GPU figure of benchmarks/RESULTS.md, one part at a time (each part fits in 10 minutes on one
# H100). Run from the repository root on a CUDA machine with mamba-ssm and causal-conv1d installed:
#
#   bash benchmarks/gpu_suite.sh tests       # pytest tests/gpu (fused-kernel parity, CUDA graphs, streams)
#   bash benchmarks/gpu_suite.sh latency     # paper Table 4 (+ adapters overlapping their FFN)
#   bash benchmarks/gpu_suite.sh train       # training step, eager and graphed, +- overlap
#   bash benchmarks/gpu_suite.sh graphs      # AST training step as the recipes take it, graphed
#   bash benchmarks/gpu_suite.sh recipes-gsc # recipe train_mode eager vs cuda_graph: GSC, AST-base
#   TIKTOKEN=<multilingual.tiktoken> bash benchmarks/gpu_suite.sh recipes-cv   # Common Voice, Whisper-small
#
# Results (JSON and logs) go to $OUT, else results/gpu_suite/. TIKTOKEN is Whisper's
# multilingual.tiktoken (tools.whisper_assets.fetch_multilingual_tiktoken).
set -euo pipefail
out="${OUT:-results/gpu_suite}"
mkdir -p "$out"
part="${1:?usage: bash benchmarks/gpu_suite.sh tests|latency|train|graphs|recipes-gsc|recipes-cv}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)" |
  tee -a "$out/device.txt"
case "$part" in
  tests)
    python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$out/pytest_gpu.txt" | tail -25
    ;;
  latency)
    python3 benchmarks/latency.py --json "$out/latency.json" 2>&1 | tee "$out/latency.txt" | grep '^|'
    python3 benchmarks/plot_results.py --latency "$out/latency.json" --out "$out"
    ;;
  train)
    python3 benchmarks/train_step.py --modes eager,graphed --overlap both --json "$out/train_step.json" 2>&1 |
      tee "$out/train_step.txt" | grep '^|'
    python3 benchmarks/plot_results.py --train "$out/train_step.json" --out "$out"
    ;;
  graphs)
    for shape in "--batch 32 --frames 500" "--batch 128 --frames 100"; do
      for overlap in "" "--overlap"; do
        tag="$(echo "$shape $overlap" | tr -d ' -')"
        # shellcheck disable=SC2086
        python3 benchmarks/train_graphs.py $shape $overlap --json "$out/train_graphs_$tag.json" 2>&1 |
          tee "$out/train_graphs_$tag.txt" | tail -6
      done
    done
    ;;
  recipes-gsc)
    python3 benchmarks/recipe_train_modes.py gsc --work /tmp/train_modes --out "$out" --train 6000 --eval 100
    ;;
  recipes-cv)
    python3 benchmarks/recipe_train_modes.py commonvoice --work /tmp/train_modes --out "$out" \
      --train 600 --eval 24 --tiktoken "${TIKTOKEN:?set TIKTOKEN to the path of multilingual.tiktoken}"
    ;;
  *)
    echo "unknown part: $part" >&2
    exit 2
    ;;
esac
