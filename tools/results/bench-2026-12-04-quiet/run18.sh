#!/bin/bash
# Issue 18: AVX2 build vs PyTorch held to AVX2, ResNet-20 train + infer, 3 alternated pairs.
L=$OUT/logs18; mkdir -p $L
for i in 1 2 3; do
  echo "== pair $i $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  (build-avx2/tools/spruce-bench --sections models --models resnet20 --runs 1 --threads 2 --json $L/spruce-$i.json > $L/spruce-$i.txt 2>&1)
  (cd "$PYTORCH_BENCH" && ONEDNN_MAX_CPU_ISA=AVX2 /usr/bin/python3 bench_models.py --threads 2 --models resnet20 > $L/torch-$i.txt 2>&1)
done
echo "== done $(date -u +%T)"
