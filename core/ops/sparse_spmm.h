// The inner kernel of sparse inference: one output row of a sparse weight
// times a dense input laid out as a grid of positions, in three builds --
// AVX-512, AVX2 + FMA and portable C++ -- all compiled into every binary
// (function target attributes, whatever -march says) and picked at run time
// from what the CPU supports, so one binary runs everywhere and tests can run
// each path the CPU has.
#pragma once

#include <cstdint>
#include <optional>

#include "../error.h"

namespace spruce::ops::sparse {

enum class SimdPath { kPortable, kAvx2, kAvx512 };
inline constexpr SimdPath kAllSimdPaths[] = {SimdPath::kPortable, SimdPath::kAvx2,
                                             SimdPath::kAvx512};

/// "portable", "avx2", "avx512".
const char* path_name(SimdPath path);
/// Whether this CPU can run the path.
bool path_supported(SimdPath path);
/// The path in use: the forced one, else the widest the CPU supports.
SimdPath active_path();
/// Tests and benches: use `path` (std::nullopt: back to automatic). Throws
/// UsageError when the CPU cannot run it.
void force_path(std::optional<SimdPath> path);

/// out[q] = scale * sum_{j < nnz} val[j] * src[off[j] + q] + shift for
/// q in [0, Q): a sparse row (nonzero values and their input offsets) applied
/// to Q consecutive grid positions. Reads src[off[j] + q] for q < Q only. The
/// sum runs over j in order in every path (results differ between paths only
/// by FMA contraction).
using RowKernel = void (*)(const float* src, const int32_t* off, const float* val, int64_t nnz,
                           int64_t Q, float scale, float shift, float* out);
/// The row kernel of a path (of active_path() by default).
RowKernel row_kernel(SimdPath path);
inline RowKernel row_kernel() { return row_kernel(active_path()); }

/// Where a row's grid positions land in its output: the grid is cut into
/// blocks of 16 positions; bit i of keep[k] says whether position 16 k + i is
/// an output, and at[k] is the output index of block k's first output.
/// Outputs are consecutive in grid order (a conv's grid is its output rows,
/// each padded to the input plane's width), so a block's outputs go to
/// at[k], at[k] + 1, ...
/// A map with null keep and at is the identity: every position is an output
/// at its own index (a 1x1 conv's grid is its output plane).
struct GridMap {
  const uint16_t* keep = nullptr;
  const int32_t* at = nullptr;
};

/// What a row's results become: out = act(scale * sum + shift + residual).
struct RowEpilogue {
  float scale = 1.f, shift = 0.f;
  const float* residual = nullptr;  // indexed like out; null = none
  bool relu = false;
};

/// A sparse row over grid positions [q0, q1) (q0 a multiple of 16, q1 a
/// multiple of 16 or the grid's end), written straight to the output:
/// out[map position of q] = act(scale * sum_j val[j] * src[off[j] + q] + ...)
/// for every kept q. Reads src[off[j] + q] for q < q1 only; writes kept
/// positions only. The sum runs over j in order in every path.
using GridKernel = void (*)(const float* src, const int32_t* off, const float* val, int64_t nnz,
                            int64_t q0, int64_t q1, const GridMap& map, const RowEpilogue& epilogue,
                            float* out);
/// The grid kernel of a path (of active_path() by default).
GridKernel grid_kernel(SimdPath path);
inline GridKernel grid_kernel() { return grid_kernel(active_path()); }

}  // namespace spruce::ops::sparse
