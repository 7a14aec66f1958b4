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

}  // namespace spruce::ops::sparse
