#!/bin/bash
# Alternated rounds of forward_time builds (one per commit) on a checkpoint:
#   forward_ab.sh ROUNDS CKPT BATCH THREADS BIN...
rounds=$1 ckpt=$2 batch=$3 threads=$4; shift 4
for r in $(seq $rounds); do
  for b in "$@"; do echo "$(basename $b) $($b $ckpt $batch $threads 40)"; done
done
