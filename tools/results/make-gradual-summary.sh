#!/bin/sh
# Writes gradual-summary.csv (model,pruner,config,final_sparsity,seed,test_top1,run_dir) from gradual-runs.txt.
# test_top1 is the test_acc column of the last line of the run's own log.csv (a fraction), so the summary
# can never disagree with the logs. Run from anywhere: sh tools/results/make-gradual-summary.sh
set -eu
cd "$(dirname "$0")"
out=gradual-summary.csv
echo "model,pruner,config,final_sparsity,seed,test_top1,run_dir" >"$out.tmp"
grep -v '^#' gradual-runs.txt | while read -r model pruner config sparsity seed dir; do
  [ -n "$model" ] || continue
  log="$dir/log.csv"
  [ -f "$log" ] || { echo "make-gradual-summary: $log: missing" >&2; exit 1; }
  col=$(head -n 1 "$log" | tr ',' '\n' | grep -n '^test_acc$' | cut -d: -f1)
  [ -n "$col" ] || { echo "make-gradual-summary: $log: no test_acc column" >&2; exit 1; }
  top1=$(tail -n 1 "$log" | cut -d, -f"$col")
  echo "$model,$pruner,$config,$sparsity,$seed,$top1,tools/results/$dir" >>"$out.tmp"
done
mv "$out.tmp" "$out"
