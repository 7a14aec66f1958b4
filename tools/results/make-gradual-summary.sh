#!/bin/sh
# Writes gradual-summary.csv (model,pruner,config,final_sparsity,seed,test_top1,run_dir) from gradual-runs.txt.
# test_top1 is the test_acc column of the last line of the run's own log.csv (a fraction), so the summary
# can never disagree with the logs. Run from anywhere: sh tools/results/make-gradual-summary.sh (it also prints the
# README's table of means over seeds)
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
# Prints the README's table: mean ± standard deviation (sample, n - 1) of test top-1 over the seeds of each
# configuration, in percent, in the order the configurations first appear.
echo "| model | pruner | config | sparsity | seeds | test top-1 (%) |"
echo "|---|---|---|---|---|---|"
tail -n +2 "$out" | awk -F, '
  { key = $1 "|" $2 "|" $3 "|" $4; if (!(key in n)) order[++k] = key
    n[key]++; sum[key] += 100 * $6; sq[key] += (100 * $6) ^ 2 }
  END { for (i = 1; i <= k; i++) { key = order[i]; m = sum[key] / n[key]
          sd = n[key] > 1 ? sqrt((sq[key] - n[key] * m * m) / (n[key] - 1)) : 0
          split(key, f, "|")
          spread = (n[key] > 1) ? sprintf(" ± %.2f", sd) : ""
          printf "| %s | %s | %s | %s | %d | %.2f%s |\n", f[1], f[2], f[3], f[4], n[key], m, spread } }'
