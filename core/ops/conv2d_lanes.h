// Helpers shared by the channel-lane conv kernels (conv2d_direct.cpp,
// conv2d_winograd.cpp, conv2d_depthwise_tiles.cpp): they compute with
// channels in the vector lanes, and planes_to_lanes / lanes_to_planes are the
// one pair of transposes between that layout and NCHW planes; plus their
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

/// NCHW -> channel lanes: for pixels l < count of the `cn` (<= 8 V) planes
/// at `planes` (channel ch's pixel l at planes[ch * plane + l]), stores the
/// pixel's 8 V channels as V vectors of 8 lanes at at(l) (lanes past cn get
/// zeros). Eight pixels at a time by 8x8 transposes in plane order, so planes
/// with rows shorter than 8 (MobileNet's 7x7, 4x4, 2x2) stay vectorised and
/// each pixel's 8 V floats are written together. at(l) may point anywhere
/// (a padded tile, a row of stride ld).
template <int V = 1, class At>
inline void planes_to_lanes(const float* planes, int64_t plane, int64_t cn, int64_t count,
                            const At& at) {
  const int64_t c8 = count / 8 * 8;
  for (int64_t l = 0; l < c8; l += 8) {
    __m256 v[V][8];
    for (int h = 0; h < V; ++h) {
      for (int64_t ch = 0; ch < 8; ++ch) {
        const int64_t c = h * 8 + ch;
        v[h][ch] = c < cn ? _mm256_loadu_ps(planes + c * plane + l) : _mm256_setzero_ps();
      }
      transpose8(v[h]);
    }
    for (int64_t k = 0; k < 8; ++k) {
      float* d = at(l + k);
      for (int h = 0; h < V; ++h) _mm256_storeu_ps(d + 8 * h, v[h][k]);
    }
  }
  for (int64_t l = c8; l < count; ++l) {
    float* d = at(l);
    for (int64_t c = 0; c < 8 * V; ++c) d[c] = c < cn ? planes[c * plane + l] : 0.f;
  }
}

/// Channel lanes -> NCHW, the inverse: planes[ch * plane + l] (+)= at(l)[ch]
/// for ch < cn (<= 8), l < count. Assigned values are finished by `o` with
/// the residual res, indexed as planes (res: null when o has none).
template <bool Accumulate, class At>
inline void lanes_to_planes(const At& at, int64_t count, int64_t cn, float* planes, int64_t plane,
                            const ConvOutput& o = {}, const float* res = nullptr) {
  const int64_t c8 = count / 8 * 8;
  for (int64_t l = 0; l < c8; l += 8) {
    __m256 v[8];
    for (int64_t k = 0; k < 8; ++k) v[k] = _mm256_loadu_ps(at(l + k));
    transpose8(v);
    for (int64_t ch = 0; ch < cn; ++ch) {
      const int64_t i = ch * plane + l;
      if constexpr (Accumulate)
        v[ch] = _mm256_add_ps(v[ch], _mm256_loadu_ps(planes + i));
      else
        v[ch] = finish8(o, v[ch], res, i);
      _mm256_storeu_ps(planes + i, v[ch]);
    }
  }
  if (count == c8) return;
  // The last 1-7 pixels: transposed like the others (only their own vectors
  // read), written through a lane mask: a scalar loop here was a tenth of a
  // Winograd layer's time on 7x7 and 14x14 planes.
  const int64_t r = count - c8;
  __m256 v[8];
  for (int64_t k = 0; k < 8; ++k) v[k] = k < r ? _mm256_loadu_ps(at(c8 + k)) : _mm256_setzero_ps();
  transpose8(v);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)), lanes);
  for (int64_t ch = 0; ch < cn; ++ch) {
    const int64_t i = ch * plane + c8;
    if constexpr (Accumulate) {
      v[ch] = _mm256_add_ps(v[ch], _mm256_maskload_ps(planes + i, mask));
    } else {
      if (o.residual) v[ch] = _mm256_add_ps(v[ch], _mm256_maskload_ps(res + i, mask));
      if (o.relu) v[ch] = _mm256_max_ps(v[ch], _mm256_setzero_ps());
    }
    _mm256_maskstore_ps(planes + i, mask, v[ch]);
  }
}

/// rows[j][p] (+)= T[p][j] for p < np, j < nj (<= Stride, a multiple of 8:
/// T's rows are Stride floats apart); rows[j] = out + j * P. Assigned values
/// are finished by `o` with the residual rows res + j * P (res: the residual
/// at out's position, or null).
template <bool Accumulate, int64_t Stride = 16>
inline void untranspose(const float* T, int64_t np, int64_t nj, float* out, int64_t P,
                        const ConvOutput& o = {}, const float* res = nullptr) {
  for (int64_t h = 0; h < Stride / 8 && h * 8 < nj; ++h)
    lanes_to_planes<Accumulate>([&](int64_t p) { return T + p * Stride + h * 8; }, np,
                                std::min<int64_t>(8, nj - h * 8), out + h * 8 * P, P, o,
                                res ? res + h * 8 * P : nullptr);
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
