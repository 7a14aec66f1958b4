// The copies that lay a sample out for the sparse conv kernels
// (sparse_conv2d.cpp: zero-padded phase planes): rows of a plane, whole or
// every second pixel, into rows of a wider buffer. Rows are a few dozen
// floats (ResNet on 28x28 has 28-, 14- and 7-pixel rows), too short for
// memcpy calls or the compiler's vector loops to pay, so each SIMD path has
// its own with masked tails, picked like the row kernels (sparse_spmm.h).
#pragma once

#include <cstdint>

#include "sparse_spmm.h"

namespace spruce::ops::sparse {

/// dst[r * dst_stride + k] = src[r * src_stride + step * k] for r < rows,
/// k < count; step is 1 or 2. Reads src[r * src_stride + step * k] only.
using RowCopy = void (*)(const float* src, int64_t src_stride, int64_t step, int64_t count,
                         int64_t rows, float* dst, int64_t dst_stride);
/// The row copy of a path (of active_path() by default).
RowCopy row_copy(SimdPath path);
inline RowCopy row_copy() { return row_copy(active_path()); }

}  // namespace spruce::ops::sparse
