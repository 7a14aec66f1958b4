#!/bin/bash
# Issue 14 quiet-window benchmark: ORT vs spruce, alternated, 3 rounds.
# from the repository root
L=$OUT/logs14; mkdir -p $L
M="$ORT/models"
for i in 1 2 3; do
  echo "== round $i $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  node tools/bench_ort.js "$ORT/node_modules" --runs 5 --iters 5 \
    $M/resnet20-1x28.onnx 1,28,28 $M/resnet20-3x32.onnx 3,32,32 \
    $M/mobilenetv1-1x28.onnx 1,28,28 $M/mobilenetv1-3x32.onnx 3,32,32 \
    $M/spruce-resnet20b-1x28.onnx 1,28,28 $M/spruce-mobilenet-1x28.onnx 1,28,28 > $L/ort-$i.txt 2>&1
  build/tools/spruce-bench --sections models --models resnet20,mobilenet_v1 --shapes 1x28x28,3x32x32 \
    --runs 1 --iters 1 --warmup 2 --infer-iters 10 --json $L/models-$i.json > $L/models-$i.txt 2>&1
  build/tools/spruce-bench --sections sparse --sparse-pairs 3 --json $L/sparse-$i.json > $L/sparse-$i.txt 2>&1
  for c in "tools/results/resnet20b-fmnist-dense-15/last.ckpt" "$OUT/r20b-90.ckpt" \
           "tools/results/mobilenet-fmnist-dense-15/final.npz --model mobilenet_v1" "$OUT/mb-89.ckpt"; do
    build/tools/spruce-eval --checkpoint $c --batch-size 128 --threads 2 2>&1 | grep -i -E "images/s|accuracy|top-1" | head -3 | sed "s|^|$c: |" >> $L/eval-$i.txt
  done
done
g++ -O2 -march=native tools/results/bench-2026-12-05/peak_fma.cpp -o "$OUT/peak_fma" -lpthread
"$OUT/peak_fma" 1 > $L/peak.txt; "$OUT/peak_fma" 2 >> $L/peak.txt
echo "== done $(date -u +%T)"
