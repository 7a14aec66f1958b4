// Image folder: root/<class_name>/<image files>, decoded with stb_image.
//
// Classes are the sub-folders of root, sorted by name (byte order), so a
// class's index does not depend on the file system's listing order; files in
// each class are sorted by name too. PNG, JPEG, BMP, TGA, GIF (first frame)
// and PNM files are read; other files are skipped. Without a resize target
// every image must have the size and channel count of the first one, and the
// first that differs is named in the error.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dataset.h"

namespace spruce::data {

/// The largest image the folder loader decodes, in pixels (width x height):
/// 2^25, e.g. 8192 x 4096. A few header bytes can declare any size and stb
/// would allocate it before finding the data missing.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 25;

struct ImageFolderOptions {
  /// 0: keep each file's channels (grey -> 1, colour -> 3, alpha dropped) and
  /// require all to agree; 1 or 3: convert every image (luminance or replication).
  int channels = 0;
  /// Both 0: no resize. Both > 0: every image is resized to height x width.
  int64_t height = 0;
  int64_t width = 0;
  /// Images whose header declares more pixels (width x height) are rejected
  /// with a FormatError before they are decoded.
  int64_t max_pixels = kMaxImagePixels;
};

/// Loads every image under root into memory ([N, C, H, W] uint8, labels = class index).
/// IoError if root or a file cannot be read; FormatError for an undecodable
/// file, an image larger than options.max_pixels, a size or channel
/// mismatch, an empty class folder or no class folders.
std::shared_ptr<InMemoryDataset> load_image_folder(const std::string& root,
                                                   const ImageFolderOptions& options = {});

/// Bilinear resize of one image [C, H, W] -> [C, out_height, out_width],
/// sampling at pixel centres (OpenCV's INTER_LINEAR, PyTorch's
/// align_corners=false), no antialiasing; values rounded to nearest.
std::vector<uint8_t> resize_bilinear(std::span<const uint8_t> image, const ImageShape& shape,
                                     int64_t out_height, int64_t out_width);

}  // namespace spruce::data
