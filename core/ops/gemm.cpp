// sgemm: split a product over the pool by blocks of C.
#include "gemm.h"

#include <cblas.h>

#include <algorithm>

#include "../parallel.h"

namespace spruce::ops {
namespace {

// Below this many multiply-adds (~40 µs of one core) a split costs more in
// waking the pool than it saves.
constexpr double kMinSplitMacs = 2e6;

void sgemm_here(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

}  // namespace

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  ensure_single_threaded_blas();
  const int threads = num_threads();
  const double macs = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (threads == 1 || in_parallel_region() || macs < kMinSplitMacs) {
    sgemm_here(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Each thread packs the whole of the operand that is not split, so split
  // the dimension whose operand is larger. Column blocks are multiples of 16
  // floats (one cache line of C: no false sharing), row blocks of 8.
  const bool by_columns = n >= m;
  const int64_t extent = by_columns ? n : m, align = by_columns ? 16 : 8;
  const int64_t parts = std::min<int64_t>(threads, (extent + align - 1) / align);
  if (parts <= 1) {
    sgemm_here(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t step = ((extent + parts - 1) / parts + align - 1) / align * align;
  parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t lo = p * step, hi = std::min(extent, lo + step);
      if (lo >= hi) continue;
      if (by_columns)  // C[:, lo:hi] = op(A) op(B)[:, lo:hi]
        sgemm_here(ta, tb, m, hi - lo, k, alpha, a, lda, tb ? b + lo * ldb : b + lo, ldb, beta,
                   c + lo, ldc);
      else  // C[lo:hi, :] = op(A)[lo:hi, :] op(B)
        sgemm_here(ta, tb, hi - lo, n, k, alpha, ta ? a + lo : a + lo * lda, lda, b, ldb, beta,
                   c + lo * ldc, ldc);
    }
  });
}

}  // namespace spruce::ops
