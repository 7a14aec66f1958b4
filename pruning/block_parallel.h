// How pruning spreads independent per-block work (Fisher blocks, OBS solves)
// over the machine without oversubscription (core/parallel.h's policy:
// OpenBLAS and our loops never both use the threads at once).
//
// Many blocks: num_threads() workers take blocks one at a time from a shared
// counter (blocks differ in size, and the machine may be busy, so a static
// split would leave a thread idle), each block's BLAS/LAPACK calls
// single-threaded. Few blocks: one sequential pass, BLAS uses every thread.
// A block's result never depends on which worker computed it, so runs are
// reproducible for a given thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace spruce::pruning {

/// How many workers for_each_block uses for n blocks (>= 1).
int block_workers(int64_t n);

/// Calls fn(block, worker) once for every block in [0, n), worker in
/// [0, block_workers(n)) (for per-worker scratch). fn may call BLAS; it must
/// not write state shared between blocks. Rethrows the first exception.
void for_each_block(int64_t n, const std::function<void(int64_t block, int worker)>& fn);

}  // namespace spruce::pruning
