#!/bin/bash
# old_new_torch.sh OLD_BENCH NEW_BENCH LOGDIR: two spruce-bench binaries against PyTorch held to AVX2 in one
# window, 3 rounds of (old spruce, PyTorch, new spruce), ResNet-20 1x28x28, 2 threads. PyTorch's bench_models.py
# from $PYTORCH_BENCH, as ../bench-2026-12-05b/run_pytorch.sh takes it.
L=$3; mkdir -p $L
for i in 1 2 3; do
  $1 --sections models --models resnet20 --shapes 1x28x28 --runs 1 --threads 2 > $L/old-$i.txt 2>&1
  (cd "$PYTORCH_BENCH" && ONEDNN_MAX_CPU_ISA=AVX2 /usr/bin/python3 bench_models.py --threads 2 --models resnet20) > $L/torch-$i.txt 2>&1
  $2 --sections models --models resnet20 --shapes 1x28x28 --runs 1 --threads 2 > $L/new-$i.txt 2>&1
done
