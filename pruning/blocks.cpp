// Cutting layers into Fisher blocks.
#include "blocks.h"

#include <algorithm>
#include <string>

#include "../core/error.h"

namespace spruce::pruning {

std::vector<Block> make_blocks(std::span<const int64_t> layer_sizes, int64_t block_size) {
  if (block_size < 1)
    throw UsageError("make_blocks: block size " + std::to_string(block_size) + ", expected >= 1");
  std::vector<Block> blocks;
  int64_t offset = 0;
  for (size_t l = 0; l < layer_sizes.size(); ++l) {
    const int64_t n = layer_sizes[l];
    if (n < 0)
      throw UsageError("make_blocks: layer " + std::to_string(l) + " has size " +
                       std::to_string(n));
    for (int64_t b = 0; b < n; b += block_size)
      blocks.push_back({offset + b, offset + std::min(n, b + block_size), static_cast<int64_t>(l)});
    offset += n;
  }
  return blocks;
}

}  // namespace spruce::pruning
