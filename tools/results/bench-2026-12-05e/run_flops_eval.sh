#!/bin/bash
# The gradual FLOP-aware ResNet-20 B models end to end: spruce-eval over the 10,000 Fashion-MNIST test images
# (batch 128, 2 threads) against ONNX Runtime's dense model, alternated, 3 rounds. From the repository root:
#   ORT=<onnxruntime-node install with models/> OUT=<folder> run_flops_eval.sh CKPT...
L=$OUT/logs; mkdir -p $L
for i in 1 2 3; do
  echo "== round $i $(date -u +%T)" >> $L/eval-$i.txt
  node tools/bench_ort.js "$ORT/node_modules" --runs 5 --iters 5 \
    $ORT/models/spruce-resnet20b-1x28.onnx 1,28,28 > $L/ort-$i.txt 2>&1
  for c in tools/results/resnet20b-fmnist-dense-15/last.ckpt "$@"; do
    build/tools/spruce-eval --checkpoint $c --batch-size 128 --threads 2 2>&1 |
      grep -E "images/s|top-1" | head -2 | sed "s|^|$(basename $(dirname $c)): |" >> $L/eval-$i.txt
  done
done
