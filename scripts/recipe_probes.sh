#!/bin/bash
# Recipe probes for ConvNeXt-atto from scratch on scenes (one line of scripts/recipe_probes.txt per run:
# a name and its flags), validated on 2,000 held-out training images, never the test set. Finished
# runs are skipped, so the queue resumes; each run's last line (its JSON summary) goes to runs/probe46/log.txt.
cd "$(dirname "$0")/.."
B="--data scenes:16000 --model convnext_atto --epochs 5 --batch-size 64 --seed 0 --val-split 0.125 --json"
while read name flags; do
  [ -z "$name" ] && continue
  out=runs/probe46/$name
  [ -f $out/summary.json ] && continue
  rm -rf $out
  echo "== $name $flags $(date +%T)" >> runs/probe46/log.txt
  .venv/bin/convnext train $B $flags --output-dir $out > $out.log 2>&1
  tail -1 $out.log >> runs/probe46/log.txt
done < ${1:-scripts/recipe_probes.txt}
