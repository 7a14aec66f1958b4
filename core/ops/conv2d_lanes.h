// Helpers shared by the channel-lane conv kernels (conv2d_direct.cpp,
// conv2d_winograd.cpp): they compute with channels in the vector lanes, and
// these move results between that layout and NCHW planes; plus their
// per-thread scratch buffers.
// Only for builds with AVX2 + FMA (SPRUCE_DIRECT_CONV).
#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SPRUCE_DIRECT_CONV 1

#include <algorithm>
#include <cstdint>
#include <vector>

#include "im2col.h"

namespace spruce::ops::lanes {

/// Transposes 8 vectors of 8 in place: v[i][j] <- v[j][i].
inline void transpose8(__m256 v[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
  const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  v[0] = _mm256_permute2f128_ps(u0, u4, 0x20), v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  v[2] = _mm256_permute2f128_ps(u2, u6, 0x20), v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  v[4] = _mm256_permute2f128_ps(u0, u4, 0x31), v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  v[6] = _mm256_permute2f128_ps(u2, u6, 0x31), v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/// Eight values of a fused forward finished as ConvOutput::finish does: the
/// residual res[i..i+8) added (when o has one), then the ReLU (when o asks
/// for it). max_ps(v, 0) returns 0 for a NaN, as the scalar select does.
inline __m256 finish8(const ConvOutput& o, __m256 v, const float* res, int64_t i) {
  if (o.residual) v = _mm256_add_ps(v, _mm256_loadu_ps(res + i));
  return o.relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

/// rows[j][p] (+)= T[p][j] for p < np, j < nj (<= 16); rows[j] = out + j * P.
/// Assigned values are finished by `o` with the residual rows res + j * P
/// (res: the residual at out's position, or null).
template <bool Accumulate>
inline void untranspose(const float* T, int64_t np, int64_t nj, float* out, int64_t P,
                        const ConvOutput& o = {}, const float* res = nullptr) {
  const int64_t p8 = np / 8 * 8;
  for (int64_t h = 0; h < 2 && h * 8 < nj; ++h) {
    const int64_t nh = std::min<int64_t>(8, nj - h * 8);
    for (int64_t p = 0; p < p8; p += 8) {
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(T + (p + i) * 16 + h * 8);
      transpose8(v);
      for (int64_t j = 0; j < nh; ++j) {
        const int64_t at = (h * 8 + j) * P + p;
        if constexpr (Accumulate) v[j] = _mm256_add_ps(v[j], _mm256_loadu_ps(out + at));
        else v[j] = finish8(o, v[j], res, at);
        _mm256_storeu_ps(out + at, v[j]);
      }
    }
    for (int64_t p = p8; p < np; ++p)
      for (int64_t j = 0; j < nh; ++j) {
        const int64_t at = (h * 8 + j) * P + p;
        if constexpr (Accumulate) out[at] += T[p * 16 + h * 8 + j];
        else out[at] = o.finish(T[p * 16 + h * 8 + j], res, at);
      }
  }
}

/// buf (a thread's scratch, reused from call to call) grown to n floats and
/// zeroed; returns its data.
inline float* zeroed_scratch(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  std::fill(buf.begin(), buf.begin() + n, 0.f);
  return buf.data();
}

}  // namespace spruce::ops::lanes

#endif
