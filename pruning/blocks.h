// Block structure of the block-diagonal Fisher (pruning/README.md, "Blocks"): each
// layer's flattened weight is cut into consecutive blocks of size c, and a
// layer boundary always ends a block. c >= a layer's size gives one block for
// that layer (exact per layer); c = 1 gives the diagonal.
//
// Example: layer sizes {5, 7}, c = 3 -> [0,3) [3,5) [5,8) [8,11) [11,12).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.h"

namespace spruce::pruning {

/// One diagonal block: the flat indices [begin, end) of w, inside one layer.
struct Block {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t layer = 0;  // index of the layer the block belongs to
  int64_t size() const { return end - begin; }
  bool operator==(const Block&) const = default;
};

/// Blocks of at most `block_size` weights covering layers laid out back to back
/// (layer l occupies [sum of sizes before l, + sizes[l])). Zero-size layers get
/// no block. Throws UsageError when block_size < 1 or a size < 0.
std::vector<Block> make_blocks(std::span<const int64_t> layer_sizes, int64_t block_size);

}  // namespace spruce::pruning
