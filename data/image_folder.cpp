// Image-folder loader and bilinear resize (see image_folder.h).
//
// Debian's libstb already contains the stb_image implementation (libstb.so
// exports stbi_load_from_memory), so this file includes only the declarations
// and never defines STB_IMAGE_IMPLEMENTATION.
#include "image_folder.h"

#include <stb_image.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "../core/error.h"

namespace spruce::data {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* kExts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga",
                                ".gif", ".pgm", ".ppm",  ".pnm"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

std::vector<unsigned char> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw IoError(p.string() + ": cannot open for reading");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(p.string() + ": read error");
  return bytes;
}

// Sorted names of the entries of `dir` that pass `keep`.
template <class Keep>
std::vector<fs::path> sorted_entries(const fs::path& dir, Keep keep) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.filename().string().starts_with(".")) continue;  // hidden files, .DS_Store
    if (keep(*it)) out.push_back(p);
  }
  if (ec) throw IoError(dir.string() + ": cannot list folder (" + ec.message() + ")");
  std::sort(out.begin(), out.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return out;
}

struct Decoded {
  ImageShape shape;
  std::vector<uint8_t> chw;  // [C, H, W]
};

// Decodes to `channels` channels (1 or 3); stb converts grey <-> RGB itself.
Decoded decode(const fs::path& p, const std::vector<unsigned char>& bytes, int channels) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
    throw FormatError(p.string() + ": file of " + std::to_string(bytes.size()) +
                      " bytes is too large for an image, expected < 2 GiB");
  }
  int w = 0, h = 0, native = 0;
  unsigned char* hwc = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h,
                                             &native, channels);
  if (hwc == nullptr) {
    throw FormatError(p.string() + ": cannot decode image (" + stbi_failure_reason() +
                      "), expected PNG, JPEG, BMP, TGA, GIF or PNM");
  }
  Decoded out;
  out.shape = {channels, h, w};
  out.chw.resize(static_cast<size_t>(out.shape.numel()));
  // stb gives interleaved [H, W, C]; we store channel-major [C, H, W].
  const int64_t plane = int64_t{h} * w;
  for (int64_t px = 0; px < plane; ++px) {
    for (int c = 0; c < channels; ++c) out.chw[c * plane + px] = hwc[px * channels + c];
  }
  stbi_image_free(hwc);
  return out;
}

// A binary PGM/PPM (P5/P6) must hold the pixel bytes its header declares.
// stb does not check that in its 16-bit path (maxval > 255) and reads past
// the end of a truncated file (found by fuzzing, tests/fuzz/regressions), so
// the header is parsed here as stb parses it (integers separated by
// whitespace and '#' comments to the end of the line, one byte after maxval).
void check_pnm_size(const fs::path& p, const std::vector<unsigned char>& bytes) {
  if (bytes.size() < 2 || bytes[0] != 'P' || (bytes[1] != '5' && bytes[1] != '6')) return;
  size_t at = 2;
  auto skip_space = [&] {
    while (at < bytes.size()) {
      if (std::isspace(bytes[at])) {
        ++at;
      } else if (bytes[at] == '#') {
        while (at < bytes.size() && bytes[at] != '\n' && bytes[at] != '\r') ++at;
      } else {
        break;
      }
    }
  };
  int64_t field[3] = {0, 0, 0};  // width, height, maxval
  for (int64_t& v : field) {
    skip_space();
    for (; at < bytes.size() && std::isdigit(bytes[at]) && v < (int64_t{1} << 40); ++at)
      v = v * 10 + (bytes[at] - '0');
  }
  ++at;  // the one byte that ends maxval
  // Each field may be near 2^44 (stb reads such headers its own way), so the
  // product saturates instead of overflowing: no file holds that many bytes.
  int64_t need = (bytes[1] == '6' ? 3 : 1) * (field[2] > 255 ? 2 : 1);
  if (__builtin_mul_overflow(need, field[0], &need) ||
      __builtin_mul_overflow(need, field[1], &need))
    need = INT64_MAX;
  const int64_t have = at <= bytes.size() ? static_cast<int64_t>(bytes.size() - at) : 0;
  if (need > have)
    throw FormatError(p.string() + ": truncated: the PNM header declares " +
                      std::to_string(field[0]) + "x" + std::to_string(field[1]) + " pixels (" +
                      std::to_string(need) + " bytes of pixel data), the file holds " +
                      std::to_string(have));
}

// Reads the header only (stbi_info) and checks the declared size against
// `max_pixels` before anything is decoded: a 20-byte PNM header can declare
// 10^5 x 10^5 pixels, which stb would allocate before finding the data
// missing. Returns the channels the file has natively, mapped to 1 (grey,
// grey+alpha) or 3 (RGB, RGBA).
int probe(const fs::path& p, const std::vector<unsigned char>& bytes, int64_t max_pixels) {
  int w = 0, h = 0, comp = 0;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &comp)) {
    throw FormatError(
        p.string() + ": cannot decode image (" +
        (bytes.size() > static_cast<size_t>(INT32_MAX) ? "too large" : stbi_failure_reason()) +
        "), expected PNG, JPEG, BMP, TGA, GIF or PNM");
  }
  const int64_t pixels = int64_t{w} * int64_t{h};
  if (w <= 0 || h <= 0 || pixels > max_pixels) {
    throw FormatError(p.string() + ": image declares " + std::to_string(w) + "x" +
                      std::to_string(h) + " pixels (WxH, " + std::to_string(pixels) +
                      " in all), over the limit of " + std::to_string(max_pixels) +
                      " pixels; shrink the image first");
  }
  check_pnm_size(p, bytes);
  return comp >= 3 ? 3 : 1;
}

}  // namespace

std::vector<uint8_t> resize_bilinear(std::span<const uint8_t> image, const ImageShape& shape,
                                     int64_t out_height, int64_t out_width) {
  if (static_cast<int64_t>(image.size()) != shape.numel() || shape.numel() <= 0) {
    throw UsageError("resize_bilinear: image of " + std::to_string(image.size()) +
                     " bytes does not match shape " + shape.str());
  }
  if (out_height <= 0 || out_width <= 0) {
    throw UsageError("resize_bilinear: target " + std::to_string(out_height) + "x" +
                     std::to_string(out_width) + " is invalid, expected positive sizes");
  }
  const int64_t H = shape.height, W = shape.width;
  // Source coordinate of each output row/column centre, clamped to the image.
  auto source = [](int64_t o, int64_t in, int64_t out, int64_t& i0, int64_t& i1, float& t) {
    float s =
        (static_cast<float>(o) + 0.5f) * static_cast<float>(in) / static_cast<float>(out) - 0.5f;
    s = std::clamp(s, 0.f, static_cast<float>(in - 1));
    i0 = static_cast<int64_t>(s);
    i1 = std::min(i0 + 1, in - 1);
    t = s - static_cast<float>(i0);
  };
  std::vector<uint8_t> out(static_cast<size_t>(shape.channels * out_height * out_width));
  for (int64_t c = 0; c < shape.channels; ++c) {
    const uint8_t* src = image.data() + c * H * W;
    uint8_t* dst = out.data() + c * out_height * out_width;
    for (int64_t y = 0; y < out_height; ++y) {
      int64_t y0, y1;
      float ty;
      source(y, H, out_height, y0, y1, ty);
      for (int64_t x = 0; x < out_width; ++x) {
        int64_t x0, x1;
        float tx;
        source(x, W, out_width, x0, x1, tx);
        const float top = src[y0 * W + x0] + tx * (src[y0 * W + x1] - src[y0 * W + x0]);
        const float bottom = src[y1 * W + x0] + tx * (src[y1 * W + x1] - src[y1 * W + x0]);
        const float v = top + ty * (bottom - top);
        dst[y * out_width + x] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return out;
}

std::shared_ptr<InMemoryDataset> load_image_folder(const std::string& root,
                                                   const ImageFolderOptions& options) {
  if (options.max_pixels <= 0) {
    throw UsageError("image folder " + root +
                     ": max_pixels = " + std::to_string(options.max_pixels) + ", expected > 0");
  }
  if (options.channels != 0 && options.channels != 1 && options.channels != 3) {
    throw UsageError("image folder " + root + ": channels = " + std::to_string(options.channels) +
                     ", expected 0 (keep), 1 or 3");
  }
  const bool resize = options.height > 0 || options.width > 0;
  if (resize && (options.height <= 0 || options.width <= 0)) {
    throw UsageError("image folder " + root + ": resize target " + std::to_string(options.height) +
                     "x" + std::to_string(options.width) +
                     " is invalid, expected both height and width > 0 (or both 0)");
  }
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw IoError(root + ": not a folder, expected root/<class_name>/<image files>");
  }
  const std::vector<fs::path> class_dirs =
      sorted_entries(root, [](const fs::directory_entry& e) { return e.is_directory(); });
  if (class_dirs.empty()) {
    throw FormatError(root + ": no class sub-folders, expected root/<class_name>/<image files>");
  }

  std::vector<std::string> class_names;
  std::vector<std::vector<fs::path>> files_per_class;
  size_t total = 0;
  for (const fs::path& dir : class_dirs) {
    std::vector<fs::path> files = sorted_entries(dir, [](const fs::directory_entry& e) {
      return e.is_regular_file() && is_image_file(e.path());
    });
    if (files.empty()) {
      throw FormatError(dir.string() +
                        ": class folder has no image files (.png, .jpg, .jpeg, .bmp, .tga, .gif, "
                        ".pgm, .ppm, .pnm)");
    }
    total += files.size();
    class_names.push_back(dir.filename().string());
    files_per_class.push_back(std::move(files));
  }

  ImageShape shape;  // of the first image, after conversion and resize
  fs::path first;
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  labels.reserve(total);
  for (size_t k = 0; k < files_per_class.size(); ++k) {
    for (const fs::path& file : files_per_class[k]) {
      const std::vector<unsigned char> bytes = read_file(file);
      const int native = probe(file, bytes, options.max_pixels);
      int channels = options.channels;
      if (channels == 0) {
        channels = native;
        if (!first.empty() && channels != shape.channels) {
          throw FormatError(file.string() + ": image has " + std::to_string(channels) +
                            " channel(s) but the first image " + first.string() + " has " +
                            std::to_string(shape.channels) +
                            "; set channels to 1 or 3 to convert all images");
        }
      }
      Decoded img = decode(file, bytes, channels);
      if (resize && (img.shape.height != options.height || img.shape.width != options.width)) {
        img.chw = resize_bilinear(img.chw, img.shape, options.height, options.width);
        img.shape.height = options.height;
        img.shape.width = options.width;
      }
      if (first.empty()) {
        first = file;
        shape = img.shape;
        pixels.reserve(total * static_cast<size_t>(shape.numel()));
      } else if (img.shape != shape) {
        throw FormatError(file.string() + ": image is " + std::to_string(img.shape.height) + "x" +
                          std::to_string(img.shape.width) + " (HxW) but the first image " +
                          first.string() + " is " + std::to_string(shape.height) + "x" +
                          std::to_string(shape.width) +
                          "; all images must share one size unless a resize target is given");
      }
      pixels.insert(pixels.end(), img.chw.begin(), img.chw.end());
      labels.push_back(static_cast<int32_t>(k));
    }
  }
  return std::make_shared<InMemoryDataset>("image folder " + root, shape, std::move(class_names),
                                           std::move(pixels), std::move(labels));
}

}  // namespace spruce::data
