#!/bin/bash
# spruce-bench --sections models against PyTorch 1.13 (the project's bench_models.py in $PYTORCH_BENCH),
# 3 alternated pairs, 2 threads. usage (from the repository root):
#   run_pytorch.sh avx2 LOGDIR     # build-avx2 (-Dmarch=haswell) against oneDNN held to AVX2, ResNet-20
#   run_pytorch.sh native LOGDIR   # build (-march=native, AVX-512 here) against PyTorch as installed, ResNet-20 + MobileNetV1
L=$2; mkdir -p $L
for i in 1 2 3; do
  if [ "$1" = avx2 ]; then
    build-avx2/tools/spruce-bench --sections models --models resnet20 --runs 1 --threads 2 > $L/spruce-$i.txt 2>&1
    (cd "$PYTORCH_BENCH" && ONEDNN_MAX_CPU_ISA=AVX2 /usr/bin/python3 bench_models.py --threads 2 --models resnet20) > $L/torch-$i.txt 2>&1
  else
    build/tools/spruce-bench --sections models --models resnet20,mobilenet_v1 --runs 1 --threads 2 > $L/spruce-$i.txt 2>&1
    (cd "$PYTORCH_BENCH" && /usr/bin/python3 bench_models.py --threads 2 --models resnet20 mobilenetv1) > $L/torch-$i.txt 2>&1
  fi
done
