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
//
// Grid kernels (GridKernel) run the same tiles and finish each vector in its
// store: scale and shift, then the vector's output positions compressed to
// consecutive lanes (AVX-512 compress; AVX2 a lane permutation looked up by
// the 8-bit keep mask), the residual added and ReLU applied on those lanes,
// and a masked store straight into the output. That replaces a pass that
// wrote every row to a buffer and copied it out row by row, which cost as
// much as the multiplies at the densities pruning leaves (about 0.1).
#include "sparse_spmm.h"

#include <algorithm>
#include <array>
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

/// The epilogue of one kept output: act(scale sum + shift + residual).
inline float finish(float sum, const RowEpilogue& e, int64_t at) {
  float r = sum * e.scale + e.shift;
  if (e.residual) r += e.residual[at];
  return e.relu ? std::max(r, 0.f) : r;
}

void grid_portable(const float* src, const int32_t* off, const float* val, int64_t nnz, int64_t q0,
                   int64_t q1, const GridMap& map, const RowEpilogue& e, float* out) {
  constexpr int64_t kChunk = 64;  // positions summed at a time (4 blocks)
  float t[kChunk];
  for (int64_t b = q0; b < q1; b += kChunk) {
    const int64_t n = std::min(kChunk, q1 - b);
    for (int64_t i = 0; i < n; ++i) t[i] = 0.f;
    for (int64_t j = 0; j < nnz; ++j) {
      const float* __restrict s = src + off[j] + b;
      const float v = val[j];
      for (int64_t i = 0; i < n; ++i) t[i] += v * s[i];
    }
    if (!map.keep) {  // identity
      for (int64_t i = 0; i < n; ++i) out[b + i] = finish(t[i], e, b + i);
      continue;
    }
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
      const int64_t k = (b + i0) / 16;
      int64_t at = map.at[k];
      for (int64_t i = i0; i < std::min(n, i0 + 16); ++i)
        if (map.keep[k] >> (i - i0) & 1) out[at] = finish(t[i], e, at), ++at;
    }
  }
}

#ifdef SPRUCE_SPARSE_X86

#define SPRUCE_AVX512 __attribute__((target("avx512f,avx2,fma,popcnt")))
#define SPRUCE_AVX2 __attribute__((target("avx2,fma,popcnt")))

/// Where a grid tile starting at position q stores, for both SIMD paths: its
/// blocks' entries of the map, the output and the epilogue. Identity (a null
/// map): every position is an output at its own index, so out and the
/// residual are taken from the tile's start instead.
template <bool Identity>
struct TileTarget {
  const uint16_t* keep = nullptr;
  const int32_t* at = nullptr;
  float* out;
  RowEpilogue e;

  TileTarget(const GridMap& map, const RowEpilogue& epilogue, float* plane, int64_t q)
      : out(plane), e(epilogue) {
    if constexpr (Identity) {
      out += q;
      if (e.residual) e.residual += q;
    } else {
      keep = map.keep + q / 16, at = map.at + q / 16;
    }
  }
};

/// acc[i] = sum_j val[j] * src[off[j] + 16 i + lane] (the last vector masked
/// by m when Tail).
template <int NV, bool Tail>
SPRUCE_AVX512 inline void accumulate512(const float* src, const int32_t* off, const float* val,
                                        int64_t nnz, __mmask16 m, __m512* acc) {
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
}

template <int NV, bool Tail>
SPRUCE_AVX512 inline void tile512(const float* src, const int32_t* off, const float* val,
                                  int64_t nnz, __mmask16 m, __m512 sc, __m512 sh, float* out) {
  __m512 acc[NV];
  accumulate512<NV, Tail>(src, off, val, nnz, m, acc);
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
  using Tile = void (*)(const float*, const int32_t*, const float*, int64_t, __mmask16, __m512,
                        __m512, float*);
  static constexpr Tile kTails[8] = {tile512<1, true>, tile512<2, true>, tile512<3, true>,
                                     tile512<4, true>, tile512<5, true>, tile512<6, true>,
                                     tile512<7, true>, tile512<8, true>};
  const __m512 sc = _mm512_set1_ps(scale), sh = _mm512_set1_ps(shift);
  int64_t q = 0;
  for (; q + 128 <= Q; q += 128) tile512<8, false>(src + q, off, val, nnz, 0, sc, sh, out + q);
  const int64_t rem = Q - q;
  if (rem == 0) return;
  const __mmask16 m = static_cast<__mmask16>(rem % 16 ? (1u << (rem % 16)) - 1 : 0xFFFFu);
  kTails[(rem + 15) / 16 - 1](src + q, off, val, nnz, m, sc, sh, out + q);
}

/// A grid tile: NV blocks of 16 positions from src (keep, at: the blocks'
/// entries of the grid map), finished and stored into out. Identity: every
/// position is an output at its own index (out already at the tile's start).
template <int NV, bool Tail, bool Identity>
SPRUCE_AVX512 inline void grid_tile512(const float* src, const int32_t* off, const float* val,
                                       int64_t nnz, __mmask16 m, const TileTarget<Identity>& t) {
  __m512 acc[NV];
  accumulate512<NV, Tail>(src, off, val, nnz, m, acc);
  const RowEpilogue& e = t.e;
  const __m512 sc = _mm512_set1_ps(e.scale), sh = _mm512_set1_ps(e.shift);
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) {
    __m512 r = _mm512_fmadd_ps(acc[i], sc, sh);
    __mmask16 lanes = (Tail && i == NV - 1) ? m : static_cast<__mmask16>(0xFFFF);
    int64_t o = 16 * i;
    if constexpr (!Identity) {
      const __mmask16 k = t.keep[i];
      lanes = static_cast<__mmask16>((1u << _mm_popcnt_u32(k)) - 1), o = t.at[i];
      if (k != 0xFFFF) r = _mm512_maskz_compress_ps(k, r);  // wide planes keep most blocks whole
    }
    if (e.residual) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(lanes, e.residual + o));
    // max(0, r): a NaN sum stays NaN, as in the portable path (max_ps returns
    // its second operand then).
    if (e.relu) r = _mm512_maskz_max_ps(0xFFFF, _mm512_setzero_ps(), r);
    _mm512_mask_storeu_ps(t.out + o, lanes, r);
  }
}

template <bool Identity>
SPRUCE_AVX512 void grid_run512(const float* src, const int32_t* off, const float* val, int64_t nnz,
                               int64_t q0, int64_t q1, const GridMap& map, const RowEpilogue& e,
                               float* out) {
  using Tile = void (*)(const float*, const int32_t*, const float*, int64_t, __mmask16,
                        const TileTarget<Identity>&);
  static constexpr Tile kTails[8] = {
      grid_tile512<1, true, Identity>, grid_tile512<2, true, Identity>,
      grid_tile512<3, true, Identity>, grid_tile512<4, true, Identity>,
      grid_tile512<5, true, Identity>, grid_tile512<6, true, Identity>,
      grid_tile512<7, true, Identity>, grid_tile512<8, true, Identity>};
  int64_t q = q0;
  for (; q + 128 <= q1; q += 128)
    grid_tile512<8, false, Identity>(src + q, off, val, nnz, 0,
                                     TileTarget<Identity>(map, e, out, q));
  const int64_t rem = q1 - q;
  if (rem == 0) return;
  const __mmask16 m = static_cast<__mmask16>(rem % 16 ? (1u << (rem % 16)) - 1 : 0xFFFFu);
  kTails[(rem + 15) / 16 - 1](src + q, off, val, nnz, m, TileTarget<Identity>(map, e, out, q));
}

SPRUCE_AVX512 void grid_avx512(const float* src, const int32_t* off, const float* val, int64_t nnz,
                               int64_t q0, int64_t q1, const GridMap& map, const RowEpilogue& e,
                               float* out) {
  (map.keep ? grid_run512<false> : grid_run512<true>)(src, off, val, nnz, q0, q1, map, e, out);
}

template <int NV, bool Tail>
SPRUCE_AVX2 inline void accumulate256(const float* src, const int32_t* off, const float* val,
                                      int64_t nnz, __m256i m, __m256* acc) {
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
}

template <int NV, bool Tail>
SPRUCE_AVX2 inline void tile256(const float* src, const int32_t* off, const float* val, int64_t nnz,
                                __m256i m, __m256 sc, __m256 sh, float* out) {
  __m256 acc[NV];
  accumulate256<NV, Tail>(src, off, val, nnz, m, acc);
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) {
    const __m256 r = _mm256_fmadd_ps(acc[i], sc, sh);
    if (Tail && i == NV - 1)
      _mm256_maskstore_ps(out + 8 * i, m, r);
    else
      _mm256_storeu_ps(out + 8 * i, r);
  }
}

/// Lanes i < n set (a mask for the first n of 8 lanes).
SPRUCE_AVX2 inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

SPRUCE_AVX2 void row_avx2(const float* src, const int32_t* off, const float* val, int64_t nnz,
                          int64_t Q, float scale, float shift, float* out) {
  using Tile = void (*)(const float*, const int32_t*, const float*, int64_t, __m256i, __m256,
                        __m256, float*);
  static constexpr Tile kTails[8] = {tile256<1, true>, tile256<2, true>, tile256<3, true>,
                                     tile256<4, true>, tile256<5, true>, tile256<6, true>,
                                     tile256<7, true>, tile256<8, true>};
  const __m256 sc = _mm256_set1_ps(scale), sh = _mm256_set1_ps(shift);
  int64_t q = 0;
  for (; q + 64 <= Q; q += 64)
    tile256<8, false>(src + q, off, val, nnz, __m256i{}, sc, sh, out + q);
  const int64_t rem = Q - q;
  if (rem == 0) return;
  const __m256i m = first_lanes(static_cast<int>(rem % 8 ? rem % 8 : 8));
  kTails[(rem + 7) / 8 - 1](src + q, off, val, nnz, m, sc, sh, out + q);
}

/// For each 8-bit keep mask, the lane order that moves its kept lanes to the
/// front (AVX2 has no compress instruction).
constexpr std::array<std::array<int32_t, 8>, 256> kCompress8 = [] {
  std::array<std::array<int32_t, 8>, 256> t{};
  for (int k = 0; k < 256; ++k) {
    int n = 0;
    for (int i = 0; i < 8; ++i)
      if (k >> i & 1) t[k][n++] = i;
  }
  return t;
}();

/// The AVX2 grid tile: NV vectors of 8 positions, two per block of 16.
template <int NV, bool Tail, bool Identity>
SPRUCE_AVX2 inline void grid_tile256(const float* src, const int32_t* off, const float* val,
                                     int64_t nnz, __m256i m, const TileTarget<Identity>& t) {
  __m256 acc[NV];
  accumulate256<NV, Tail>(src, off, val, nnz, m, acc);
  const RowEpilogue& e = t.e;
  const __m256 sc = _mm256_set1_ps(e.scale), sh = _mm256_set1_ps(e.shift);
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) {
    __m256 r = _mm256_fmadd_ps(acc[i], sc, sh);
    __m256i lanes = (Tail && i == NV - 1) ? m : _mm256_set1_epi32(-1);
    int64_t o = 8 * i;
    if constexpr (!Identity) {
      const unsigned block = t.keep[i / 2];
      const unsigned k = i % 2 ? block >> 8 : block & 0xFFu;
      o = t.at[i / 2] + (i % 2 ? _mm_popcnt_u32(block & 0xFFu) : 0);
      lanes = first_lanes(_mm_popcnt_u32(k));
      if (k != 0xFF)
        r = _mm256_permutevar8x32_ps(
            r, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kCompress8[k].data())));
    }
    if (e.residual) r = _mm256_add_ps(r, _mm256_maskload_ps(e.residual + o, lanes));
    if (e.relu) r = _mm256_max_ps(_mm256_setzero_ps(), r);  // NaN stays NaN
    _mm256_maskstore_ps(t.out + o, lanes, r);
  }
}

template <bool Identity>
SPRUCE_AVX2 void grid_run256(const float* src, const int32_t* off, const float* val, int64_t nnz,
                             int64_t q0, int64_t q1, const GridMap& map, const RowEpilogue& e,
                             float* out) {
  using Tile = void (*)(const float*, const int32_t*, const float*, int64_t, __m256i,
                        const TileTarget<Identity>&);
  static constexpr Tile kTails[8] = {
      grid_tile256<1, true, Identity>, grid_tile256<2, true, Identity>,
      grid_tile256<3, true, Identity>, grid_tile256<4, true, Identity>,
      grid_tile256<5, true, Identity>, grid_tile256<6, true, Identity>,
      grid_tile256<7, true, Identity>, grid_tile256<8, true, Identity>};
  int64_t q = q0;
  for (; q + 64 <= q1; q += 64)
    grid_tile256<8, false, Identity>(src + q, off, val, nnz, __m256i{},
                                     TileTarget<Identity>(map, e, out, q));
  const int64_t rem = q1 - q;
  if (rem == 0) return;
  const __m256i m = first_lanes(static_cast<int>(rem % 8 ? rem % 8 : 8));
  kTails[(rem + 7) / 8 - 1](src + q, off, val, nnz, m, TileTarget<Identity>(map, e, out, q));
}

SPRUCE_AVX2 void grid_avx2(const float* src, const int32_t* off, const float* val, int64_t nnz,
                           int64_t q0, int64_t q1, const GridMap& map, const RowEpilogue& e,
                           float* out) {
  (map.keep ? grid_run256<false> : grid_run256<true>)(src, off, val, nnz, q0, q1, map, e, out);
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
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("popcnt");
    case SimdPath::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
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

GridKernel grid_kernel(SimdPath path) {
#ifdef SPRUCE_SPARSE_X86
  if (path == SimdPath::kAvx512) return grid_avx512;
  if (path == SimdPath::kAvx2) return grid_avx2;
#endif
  (void)path;
  return grid_portable;
}

}  // namespace spruce::ops::sparse
