#!/bin/bash
# Issue 16: data-parallel training 2x1 vs 1x1 vs 1x2, and distributed WoodFisher 2x1 vs 1x1; 3 rounds.
# from the repository root
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
L=$OUT/logs16; mkdir -p $L
B=build/tools/spruce-bench-mpi
for i in 1 2 3; do
  echo "== round $i $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  for m in resnet20 mobilenet_v1; do
    it=6; [ $m = resnet20 ] && it=10
    mpirun --oversubscribe --bind-to none -np 1 $B --section train --model $m --threads 1 --iters $it --warmup 2 > $L/train-$m-1x1-$i.txt 2>&1
    mpirun --oversubscribe --bind-to none -np 2 $B --section train --model $m --threads 1 --iters $it --warmup 2 > $L/train-$m-2x1-$i.txt 2>&1
    mpirun --oversubscribe --bind-to none -np 1 $B --section train --model $m --threads 2 --iters $it --warmup 2 > $L/train-$m-1x2-$i.txt 2>&1
  done
  mpirun --oversubscribe --bind-to none -np 1 $B --section woodfisher > $L/wf-1x1-$i.txt 2>&1
  mpirun --oversubscribe --bind-to none -np 2 $B --section woodfisher > $L/wf-2x1-$i.txt 2>&1
done
echo "== done $(date -u +%T)"
