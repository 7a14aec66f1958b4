// The .npy array format inside an .npz archive (core/io/npz.h): the header
// spruce writes (NPY 1.0, '<f4', C order) and the validating parser of one
// array as numpy writes it (versions 1-3, C or Fortran order, the float,
// integer and bool dtypes of a PyTorch state_dict). Used by npz.cpp only;
// the ZIP container around the arrays stays there.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "../tensor.h"

namespace spruce::io {

/// The .npy header of a float32 C-order array of `shape`, padded so that the
/// data starts at a multiple of 64 bytes (as numpy writes it); the data follows.
std::string npy_header(const Shape& shape);

/// Parses one .npy array (the bytes of one archive entry) into a float
/// tensor; FormatError naming `source` when it is not a valid array.
Tensor parse_npy(std::span<const uint8_t> bytes, const std::string& source);

}  // namespace spruce::io
