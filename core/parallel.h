// Thread policy. The machine has few cores, so spruce keeps one thread count
// for everything: OpenBLAS gets it for its GEMMs, and our own loops
// (im2col, depthwise conv, batch norm, elementwise) split work over the same
// number of threads. The two never run at once: our parallel loops are never
// called from inside a GEMM and never call one, so there is no
// oversubscription. Work is split statically by index range, so results do
// not depend on scheduling: same seed + same thread count = same bits.
#pragma once

#include <cstdint>
#include <functional>

namespace spruce {

/// Sets the thread count for OpenBLAS and for parallel_for (>= 1).
void set_num_threads(int n);
int num_threads();
/// Default from SPRUCE_NUM_THREADS, else the number of cores.
int default_num_threads();

/// Calls fn(begin_i, end_i) on disjoint consecutive chunks covering
/// [begin, end), in parallel when the range is at least `grain` long.
/// Chunk boundaries depend only on (begin, end, grain, num_threads()).
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace spruce
