// for_each_block: workers over blocks with single-threaded BLAS.
#include "block_parallel.h"

#include <cblas.h>

#include <atomic>

#include "../core/parallel.h"

namespace spruce::pruning {

int block_workers(int64_t n) {
  const int threads = num_threads();
  // At least two blocks per thread, else a thread would idle for a whole block.
  return (threads > 1 && n >= 2 * threads) ? threads : 1;
}

void for_each_block(int64_t n, const std::function<void(int64_t, int)>& fn) {
  const int workers = block_workers(n);
  if (workers == 1) {
    for (int64_t b = 0; b < n; ++b) fn(b, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  openblas_set_num_threads(1);
  try {
    parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        try {
          for (int64_t b = next++; b < n && !failed; b = next++) fn(b, static_cast<int>(w));
        } catch (...) {
          failed = true;  // stop the other workers early; parallel_for rethrows
          throw;
        }
      }
    });
  } catch (...) {
    openblas_set_num_threads(num_threads());
    throw;
  }
  openblas_set_num_threads(num_threads());
}

}  // namespace spruce::pruning
