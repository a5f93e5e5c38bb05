#!/usr/bin/env bash
# Every CPU figure docs/performance.md keeps per machine kind, as one command for the day the machine
# is of a kind not measured yet (issue 12: an Intel Xeon with AMX; issue 22: an AVX2-only AMD Zen 3,
# where the dense demos must also finish within 10 minutes each). Run after `make install`:
#     bash scripts/cpu_check.sh                  # the figures, into docs/bench/ and runs/cpu-check-*
#     QUICK=1 bash scripts/cpu_check.sh          # seconds: tiny model and one epoch, to check the script
set -eu
BIN=${BIN:-.venv/bin}
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { case " $flags " in *" $1 "*) echo yes ;; *) echo no ;; esac; }
if [ "$(has amx_tile)" = yes ]; then kind=intel-amx; elif [ "$(has avx512f)" = no ]; then kind=avx2
elif grep -qm1 AuthenticAMD /proc/cpuinfo; then kind=amd; else kind=other; fi
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | $(nproc) threads | avx512f $(has avx512f)," \
     "avx512_bf16 $(has avx512_bf16), amx_tile $(has amx_tile), amx_bf16 $(has amx_bf16) | commit $(git rev-parse --short HEAD)"

if [ -n "${QUICK:-}" ]; then
    out=$(mktemp -d); model=convnext_test; bench=(--model "$model" --input-size 64 --rounds 1 --iters 1 --no-memory); train=(--epochs 1 --max-steps 5)
else
    out=docs/bench; model=convnext_tiny; bench=(--compile --rounds 5 --iters 2); train=()
fi
runs=runs/cpu-check-$kind

# 1-2. ConvNeXt-T against the peers, float32 and bfloat16 (autocast for the peers), with "% peak".
for amp in fp32 bf16; do
    extra=(); [ "$amp" = bf16 ] && extra=(--amp bf16)
    "$BIN/convnext" bench "${bench[@]}" "${extra[@]}" --json "$out/cpu-$kind-$amp-$model.json" \
        --plot "$out/cpu-$kind-$amp-$model.png" | tee "$out/cpu-$kind-$amp-$model.txt"
done

# 3-4. The demo (ConvNeXt-atto, digits) in float32 and in bf16: test top-1 and seconds of training,
# then what bf16 costs in accuracy (scripts/bf16_cost.py).
for amp in fp32 bf16; do
    extra=(); [ "$amp" = bf16 ] && extra=(--amp bf16)
    "$BIN/convnext" train "${train[@]}" "${extra[@]}" --output-dir "$runs/$amp" > "$runs-$amp.log" 2>&1 || { tail -5 "$runs-$amp.log"; exit 1; }
    "$BIN/python" -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], 'demo: test top-1', round(100 * s['test_top1'], 2), '% in', round(s['wall_s']), 's of training')" "$runs/$amp/summary.json" "$amp"
done
"$BIN/python" scripts/bf16_cost.py "$runs/fp32" "$runs/bf16"

# 5-6. The dense demos (issue 22: within 10 minutes each on every kind), wall time of the whole command.
for task in detect segment; do
    start=$(date +%s)
    "$BIN/convnext" "$task" train "${train[@]}" --output-dir "$runs/$task" > "$runs-$task.log" 2>&1 || { tail -5 "$runs-$task.log"; exit 1; }
    echo "$task demo: $(tr "\r" "\n" < "$runs-$task.log" | grep -a "run written to" | tail -1) ($(( $(date +%s) - start )) s in all)"
done
