// Row kernels of sparse inference (see sparse_spmm.h) and their run-time
// dispatch.
//
// Register blocking: the output row is cut into tiles of NV vectors of
// consecutive grid positions (NV = 8: 128 positions with AVX-512, 64 with
// AVX2), each held in registers over all nonzeros of the row: per nonzero one
// offset load, one broadcast of the value and NV FMAs whose input operand is
// an unaligned load at src + offset. Every input value loaded feeds one FMA
// (an unstructured sparse row shares no input between outputs), so the
// kernel is bound by loads and FMAs alike; 8 independent accumulators cover
// the FMA latency. The last, partial tile uses masked loads and stores, so
// nothing is read or written past position Q. The AVX-512 and AVX2 versions
// are the same loop written twice: their vector types, masks and intrinsics
// differ in every line.
#include "sparse_spmm.h"

#include <atomic>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>

#include "../error.h"
#define SPRUCE_SPARSE_X86 1
#endif

namespace spruce::ops::sparse {

namespace {

void row_portable(const float* src, const int32_t* off, const float* val, int64_t nnz, int64_t Q,
                  float scale, float shift, float* out) {
  for (int64_t q = 0; q < Q; ++q) out[q] = 0.f;
  for (int64_t j = 0; j < nnz; ++j) {
    const float* __restrict s = src + off[j];
    float* __restrict o = out;
    const float v = val[j];
    for (int64_t q = 0; q < Q; ++q) o[q] += v * s[q];
  }
  for (int64_t q = 0; q < Q; ++q) out[q] = out[q] * scale + shift;
}

#ifdef SPRUCE_SPARSE_X86

#define SPRUCE_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define SPRUCE_AVX2 __attribute__((target("avx2,fma")))

template <int NV, bool Tail>
SPRUCE_AVX512 inline void tile512(const float* src, const int32_t* off, const float* val,
                                  int64_t nnz, __mmask16 m, __m512 sc, __m512 sh, float* out) {
  __m512 acc[NV];
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < nnz; ++j) {
    const float* s = src + off[j];
    const __m512 w = _mm512_set1_ps(val[j]);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      const __m512 x = (Tail && i == NV - 1) ? _mm512_maskz_loadu_ps(m, s + 16 * i)
                                             : _mm512_loadu_ps(s + 16 * i);
      acc[i] = _mm512_fmadd_ps(w, x, acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) {
    const __m512 r = _mm512_fmadd_ps(acc[i], sc, sh);
    if (Tail && i == NV - 1)
      _mm512_mask_storeu_ps(out + 16 * i, m, r);
    else
      _mm512_storeu_ps(out + 16 * i, r);
  }
}

SPRUCE_AVX512 void row_avx512(const float* src, const int32_t* off, const float* val, int64_t nnz,
                              int64_t Q, float scale, float shift, float* out) {
  const __m512 sc = _mm512_set1_ps(scale), sh = _mm512_set1_ps(shift);
  int64_t q = 0;
  for (; q + 128 <= Q; q += 128) tile512<8, false>(src + q, off, val, nnz, 0, sc, sh, out + q);
  const int64_t rem = Q - q;
  if (rem == 0) return;
  const __mmask16 m = static_cast<__mmask16>(rem % 16 ? (1u << (rem % 16)) - 1 : 0xFFFFu);
  src += q, out += q;
  switch ((rem + 15) / 16) {
    case 1:
      tile512<1, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 2:
      tile512<2, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 3:
      tile512<3, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 4:
      tile512<4, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 5:
      tile512<5, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 6:
      tile512<6, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 7:
      tile512<7, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    default:
      tile512<8, true>(src, off, val, nnz, m, sc, sh, out);
      break;
  }
}

template <int NV, bool Tail>
SPRUCE_AVX2 inline void tile256(const float* src, const int32_t* off, const float* val, int64_t nnz,
                                __m256i m, __m256 sc, __m256 sh, float* out) {
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t j = 0; j < nnz; ++j) {
    const float* s = src + off[j];
    const __m256 w = _mm256_broadcast_ss(val + j);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      const __m256 x =
          (Tail && i == NV - 1) ? _mm256_maskload_ps(s + 8 * i, m) : _mm256_loadu_ps(s + 8 * i);
      acc[i] = _mm256_fmadd_ps(w, x, acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) {
    const __m256 r = _mm256_fmadd_ps(acc[i], sc, sh);
    if (Tail && i == NV - 1)
      _mm256_maskstore_ps(out + 8 * i, m, r);
    else
      _mm256_storeu_ps(out + 8 * i, r);
  }
}

SPRUCE_AVX2 void row_avx2(const float* src, const int32_t* off, const float* val, int64_t nnz,
                          int64_t Q, float scale, float shift, float* out) {
  const __m256 sc = _mm256_set1_ps(scale), sh = _mm256_set1_ps(shift);
  int64_t q = 0;
  for (; q + 64 <= Q; q += 64)
    tile256<8, false>(src + q, off, val, nnz, __m256i{}, sc, sh, out + q);
  const int64_t rem = Q - q;
  if (rem == 0) return;
  const int lanes = static_cast<int>(rem % 8 ? rem % 8 : 8);
  const __m256i m =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  src += q, out += q;
  switch ((rem + 7) / 8) {
    case 1:
      tile256<1, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 2:
      tile256<2, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 3:
      tile256<3, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 4:
      tile256<4, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 5:
      tile256<5, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 6:
      tile256<6, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    case 7:
      tile256<7, true>(src, off, val, nnz, m, sc, sh, out);
      break;
    default:
      tile256<8, true>(src, off, val, nnz, m, sc, sh, out);
      break;
  }
}

#endif  // SPRUCE_SPARSE_X86

std::atomic<int> g_forced{-1};

}  // namespace

const char* path_name(SimdPath path) {
  switch (path) {
    case SimdPath::kPortable:
      return "portable";
    case SimdPath::kAvx2:
      return "avx2";
    case SimdPath::kAvx512:
      return "avx512";
  }
  return "?";
}

bool path_supported(SimdPath path) {
  switch (path) {
    case SimdPath::kPortable:
      return true;
#ifdef SPRUCE_SPARSE_X86
    case SimdPath::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SimdPath::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
#else
    default:
      return false;
#endif
  }
  return false;
}

SimdPath active_path() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<SimdPath>(forced);
  static const SimdPath best = path_supported(SimdPath::kAvx512) ? SimdPath::kAvx512
                               : path_supported(SimdPath::kAvx2) ? SimdPath::kAvx2
                                                                 : SimdPath::kPortable;
  return best;
}

void force_path(std::optional<SimdPath> path) {
  if (path && !path_supported(*path))
    throw UsageError(std::string("sparse kernels: this CPU cannot run the ") + path_name(*path) +
                     " path");
  g_forced.store(path ? static_cast<int>(*path) : -1);
}

RowKernel row_kernel(SimdPath path) {
#ifdef SPRUCE_SPARSE_X86
  if (path == SimdPath::kAvx512) return row_avx512;
  if (path == SimdPath::kAvx2) return row_avx2;
#endif
  (void)path;
  return row_portable;
}

}  // namespace spruce::ops::sparse
