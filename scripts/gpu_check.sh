#!/usr/bin/env bash
# The GPU measurements in docs/performance.md (and with ROADMAP=1 docs/roadmap.md's), as one script for
# a CUDA machine that already has torch, torchvision, timm, transformers and pytest (no install needed).
# Usage: OUT=results bash scripts/gpu_check.sh      (COMPILE=0: nothing compiled, about 2 minutes less)
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
COMPILE=${COMPILE:-1}
compile_flag=--compile
[ "$COMPILE" = 1 ] || compile_flag=--no-compile
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm, transformers, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__)"
git log -1 --format='commit %h' 2>/dev/null

# 0. The CUDA paths give timm's gradients, each pointwise kernel and the measured choice (CI has no GPU).
timeout 150 python3 -m pytest -p no:cacheprovider tests/test_parity.py tests/test_speed_paths.py -k "cuda or gpu" \
    > "$OUT/cuda-tests.log" 2>&1
echo "CUDA tests: pytest exit status $? (0: all passed; $OUT/cuda-tests.log)"

# 1. Inference and training against the peers: bf16 autocast, channels-last, ConvNeXt-T.
timeout 240 python3 -m convnext.cli bench --device cuda --amp bf16 --batch-size 128 --rounds 5 --iters 10 \
    --backend pytorch "$compile_flag" --json "$OUT/cuda-bench.json" --plot "$OUT/cuda-bench.png" 2>&1 | grep -v Warning

# 2. What the measured pointwise kernels are worth in training; then, in a process of its own, the
#    compiled step, ours and timm's.
timeout 120 python3 scripts/training_step.py --device cuda --amp bf16 --batch-size 128 --rounds 5 --iters 10 \
    --json "$OUT/cuda-training-step.json" --profile "$OUT/cuda-training-profile.txt" 2>&1 | grep -v Warning
if [ "$COMPILE" = 1 ]; then
    timeout 300 python3 scripts/training_step.py --device cuda --amp bf16 --batch-size 128 --rounds 5 --iters 10 \
        --compile --json "$OUT/cuda-training-step-compiled.json" 2>&1 | grep -v Warning
fi

# 3. The roadmap on the built-in digits: every R50 step, one shared recipe, 10 epochs each.
if [ "${ROADMAP:-0}" = 1 ]; then
    timeout 300 python3 -m convnext.cli roadmap --train --epochs 10 --device cuda --output-dir /tmp/roadmap 2>&1 \
        | grep -vE "step/s|Warning"
    cp /tmp/roadmap/roadmap.csv /tmp/roadmap/roadmap.png "$OUT/" 2>/dev/null
fi
echo done
