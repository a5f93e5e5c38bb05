#!/usr/bin/env bash
# The GPU measurements in docs/performance.md and docs/roadmap.md, as one script for a CUDA machine
# that already has torch, torchvision, timm, transformers and scikit-learn (no install needed).
# Usage: OUT=results bash scripts/gpu_check.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm, transformers, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__)"

# 1. Inference and training against the peers: bf16 autocast, channels-last, ConvNeXt-T.
timeout 240 python3 -m convnext.cli bench --device cuda --amp bf16 --batch-size 128 --rounds 5 --iters 10 \
    --no-onnx --compile --json "$OUT/cuda-bench.json" --plot "$OUT/cuda-bench.png" 2>&1 | grep -v Warning

# 2. The roadmap on the built-in digits: every R50 step, one shared recipe, 10 epochs each.
timeout 300 python3 -m convnext.cli roadmap --train --epochs 10 --device cuda --output-dir /tmp/roadmap 2>&1 \
    | grep -vE "step/s|Warning"
cp /tmp/roadmap/roadmap.csv /tmp/roadmap/roadmap.png "$OUT/" 2>/dev/null
echo done
