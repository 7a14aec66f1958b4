// Row copies for sparse packing (see sparse_pack.h), AVX-512, AVX2 + FMA and
// portable, compiled into every binary through target attributes.
//
// Step 2 takes the even pixels of 2 vectors: AVX-512 with one two-source
// permutation, AVX2 with an in-lane shuffle and a cross-lane reorder. Tails
// use masked loads and stores, so nothing outside the rows is read or written.
#include "sparse_pack.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SPRUCE_PACK_X86 1
#endif

namespace spruce::ops::sparse {

namespace {

void copy_portable(const float* src, int64_t src_stride, int64_t step, int64_t count, int64_t rows,
                   float* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < count; ++k) dst[r * dst_stride + k] = src[r * src_stride + step * k];
}

#ifdef SPRUCE_PACK_X86

__attribute__((target("avx512f"))) void copy_avx512(const float* src, int64_t src_stride,
                                                    int64_t step, int64_t count, int64_t rows,
                                                    float* dst, int64_t dst_stride) {
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  // first n of 16 lanes (n <= 16; n may be <= 0)
  auto lanes = [](int64_t n) __attribute__((target("avx512f"))) {
    return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1);
  };
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    for (int64_t k = 0; k < count; k += 16) {
      const __mmask16 out = lanes(count - k);
      if (step == 1) {
        _mm512_mask_storeu_ps(d + k, out, _mm512_maskz_loadu_ps(out, s + k));
        continue;
      }
      // Source floats 2k .. 2k + 2n - 2 for the n outputs of this vector.
      const int64_t need = 2 * (count - k) - 1;
      const __m512 lo = _mm512_maskz_loadu_ps(lanes(need), s + 2 * k);
      const __m512 hi = _mm512_maskz_loadu_ps(lanes(need - 16), s + 2 * k + 16);
      _mm512_mask_storeu_ps(d + k, out, _mm512_permutex2var_ps(lo, evens, hi));
    }
  }
}

__attribute__((target("avx2"))) void copy_avx2(const float* src, int64_t src_stride, int64_t step,
                                               int64_t count, int64_t rows, float* dst,
                                               int64_t dst_stride) {
  // first n of 8 lanes
  auto lanes = [](int64_t n) __attribute__((target("avx2"))) {
    const int m = static_cast<int>(n >= 8 ? 8 : n <= 0 ? 0 : n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  };
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    for (int64_t k = 0; k < count; k += 8) {
      const __m256i out = lanes(count - k);
      if (step == 1) {
        _mm256_maskstore_ps(d + k, out, _mm256_maskload_ps(s + k, out));
        continue;
      }
      const int64_t need = 2 * (count - k) - 1;
      const __m256 lo = _mm256_maskload_ps(s + 2 * k, lanes(need));
      const __m256 hi = _mm256_maskload_ps(s + 2 * k + 8, lanes(need - 8));
      // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] -> [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6]
      const __m256 mixed = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 even =
          _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mixed), _MM_SHUFFLE(3, 1, 2, 0)));
      _mm256_maskstore_ps(d + k, out, even);
    }
  }
}

#endif  // SPRUCE_PACK_X86

}  // namespace

RowCopy row_copy(SimdPath path) {
#ifdef SPRUCE_PACK_X86
  if (path == SimdPath::kAvx512) return copy_avx512;
  if (path == SimdPath::kAvx2) return copy_avx2;
#endif
  (void)path;
  return copy_portable;
}

}  // namespace spruce::ops::sparse
