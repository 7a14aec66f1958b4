// Single-precision GEMM on spruce's threads. OpenBLAS itself runs
// single-threaded (core/parallel.h): its pthread pool would otherwise spin in
// sched_yield between GEMMs, competing with our own loops for the cores. A
// large product called from outside a parallel region is split here into
// blocks of C, one single-threaded OpenBLAS call per pool thread; inside a
// parallel region (e.g. a conv worker already owning a range of samples) it
// runs on the calling thread.
#pragma once

#include <cstdint>

namespace spruce::ops {

/// Row-major C [m, n] = alpha op(A) op(B) + beta C, with cblas_sgemm's
/// contract (op(A) [m, k], op(B) [k, n], leading dimensions as in CBLAS).
/// The split (columns of C, or rows when C is tall) depends only on the sizes
/// and num_threads(), and every element of C is one single-threaded sum, so
/// results are reproducible for a given thread count.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace spruce::ops
