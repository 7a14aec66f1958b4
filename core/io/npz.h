// NumPy .npz interchange: named float32 tensors <-> a ZIP archive of .npy
// arrays, so spruce parameters load with `numpy.load` and map onto a PyTorch
// state_dict (names like "layer1.0.conv1.weight" become entries
// "layer1.0.conv1.weight.npy").
//
// Writing: NPY format 1.0 ('<f4', C order), stored uncompressed (ZIP method
// 0) with zlib CRC-32s, a fixed timestamp (1980-01-01) so equal tensors give
// equal files, no ZIP64 (an archive must stay under 4 GiB), written
// atomically (temporary file, fflush, fsync, rename).
//
// Reading: what we write, and what numpy.savez / numpy.savez_compressed
// write: stored or deflated entries (method 0 or 8), ZIP64 extra fields and
// records, NPY versions 1-3, C or Fortran order, and the dtypes a PyTorch
// state_dict saved with numpy has: '<f4', '<f8' (rounded to float32), '<i8'
// (num_batches_tracked), '|b1' and '|u1' (masks); also the other integer sizes
// and big-endian variants. Everything becomes float32; an integer float32
// cannot hold exactly is an error, not a rounded value. Every offset, size, CRC and shape is
// checked against the file before anything is allocated; errors are one-line FormatErrors naming
// the file and the entry.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "../tensor.h"

namespace spruce::io {

/// An ordered list of named tensors (the shape of Module::named_parameters()).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Writes `tensors` to `path` as an .npz archive, entries in the given order.
/// Throws UsageError for an empty or duplicate name or an undefined tensor,
/// IoError when writing fails (the previous file at `path` stays intact).
void write_npz(const std::string& path, const NamedTensors& tensors);

/// Reads every array of an .npz archive, in archive order, names without the
/// ".npy" suffix. Throws IoError if the file cannot be read, FormatError if
/// its content is not a valid archive of numeric arrays.
NamedTensors read_npz(const std::string& path);

}  // namespace spruce::io
