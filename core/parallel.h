// Thread policy. The machine has few cores, so spruce keeps one thread count
// for everything and one pool of threads that does all the parallel work:
// our own loops (im2col, depthwise conv, batch norm, elementwise) split work
// over it with parallel_for, and so do GEMMs (core/ops/gemm.h): a large
// product is cut into blocks of C, each a single-threaded OpenBLAS call on
// one pool thread, and a conv worker that owns a range of samples calls
// OpenBLAS on its own thread. OpenBLAS's own pthread pool is therefore kept
// at one thread: when it had threads of its own, they spun in sched_yield
// between GEMMs while our loops ran and took about a third of a training
// step's CPU time from them. Work is split statically by index range, so
// results do not depend on scheduling: same seed + same thread count = same
// bits. A ThreadLimit lets one caller run a job on fewer threads than the
// pool has (a batch-1 forward that a second core only slows down).
#pragma once

#include <cstdint>
#include <functional>

namespace spruce {

/// Sets the thread count of parallel_for and ops::sgemm (>= 1); OpenBLAS is
/// set to one thread of its own.
void set_num_threads(int n);
/// The thread count in effect on the calling thread: set_num_threads()'s,
/// or less under a ThreadLimit.
int num_threads();
/// Default from SPRUCE_NUM_THREADS, else the number of cores.
int default_num_threads();

/// Calls fn(begin_i, end_i) on disjoint consecutive chunks covering
/// [begin, end), in parallel when the range is at least `grain` long.
/// Chunk boundaries depend only on (begin, end, grain, num_threads()).
/// Called from inside a parallel region, it runs serially on that thread.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

/// True on a thread that is running a chunk of a parallel_for split.
bool in_parallel_region();

/// Puts OpenBLAS back to one thread if something changed it (cheap when it
/// is already there). ops::sgemm calls this before every product.
void ensure_single_threaded_blas();

/// For its lifetime the calling thread works as if set_num_threads(n) had
/// been called (num_threads() and parallel_for use at most n threads; 1: all
/// its loops run serially on it), without resizing the pool that other
/// callers share. Restores the previous limit when it ends; nests.
class ThreadLimit {
 public:
  explicit ThreadLimit(int n);
  ~ThreadLimit();
  ThreadLimit(const ThreadLimit&) = delete;
  ThreadLimit& operator=(const ThreadLimit&) = delete;

 private:
  int previous_;
};

/// Lends OpenBLAS every thread for its lifetime, for code that calls long
/// BLAS-3 or LAPACK routines from one thread while the pool is idle (the
/// sgemm roofline, a few large Fisher blocks); back to one thread afterwards.
class BlasThreadsGuard {
 public:
  BlasThreadsGuard();
  ~BlasThreadsGuard();
  BlasThreadsGuard(const BlasThreadsGuard&) = delete;
  BlasThreadsGuard& operator=(const BlasThreadsGuard&) = delete;
};

}  // namespace spruce
