// Helpers of the data/ tests: IDX byte builders. The generic ones (temporary
// folder, file writers plain and gzip, error messages) are tests/test_util.h's.
#pragma once

#include <cstdint>
#include <vector>

#include "tests/test_util.h"

namespace spruce::data::test {

using namespace spruce::test;

/// An IDX image file: header declaring [count, rows, cols], then `pixels` as given.
inline std::vector<uint8_t> idx_images(uint32_t count, uint32_t rows, uint32_t cols,
                                       const std::vector<uint8_t>& pixels,
                                       uint32_t magic = 0x00000803u) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  put_be32(out, count);
  put_be32(out, rows);
  put_be32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

/// An IDX label file: header declaring [count], then `labels` as given.
inline std::vector<uint8_t> idx_labels(uint32_t count, const std::vector<uint8_t>& labels,
                                       uint32_t magic = 0x00000801u) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  put_be32(out, count);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

}  // namespace spruce::data::test
