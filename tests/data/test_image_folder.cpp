// Image folder: tiny PNG/BMP files written with Debian's stb_image_write
// (libstb.so holds its implementation), read back through stb_image; class
// and file order, channel conversion, size checks and the bilinear resize.
#include <doctest/doctest.h>
#include <stb_image_write.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image_folder.h"
#include "data_test_util.h"

using namespace spruce;
using namespace spruce::data;
using namespace spruce::data::test;

namespace {

// An h x w image with `c` interleaved channels ([H, W, C], stb's layout) whose
// values encode (seed, channel, row, column).
std::vector<uint8_t> make_hwc(int h, int w, int c, int seed) {
  std::vector<uint8_t> px(static_cast<size_t>(h * w * c));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        px[(y * w + x) * c + k] = static_cast<uint8_t>(seed + 60 * k + 10 * y + x);
  return px;
}

void write_png(const std::filesystem::path& p, int h, int w, int c,
               const std::vector<uint8_t>& hwc) {
  std::filesystem::create_directories(p.parent_path());
  REQUIRE(stbi_write_png(p.string().c_str(), w, h, c, hwc.data(), w * c) != 0);
}

void write_bmp(const std::filesystem::path& p, int h, int w, int c,
               const std::vector<uint8_t>& hwc) {
  std::filesystem::create_directories(p.parent_path());
  REQUIRE(stbi_write_bmp(p.string().c_str(), w, h, c, hwc.data()) != 0);
}

// Checks that raw image i of `ds` is `hwc` transposed to [C, H, W].
void check_chw(const InMemoryDataset& ds, int64_t i, int h, int w, int c,
               const std::vector<uint8_t>& hwc) {
  const auto px = ds.pixels(i);
  REQUIRE(px.size() == static_cast<size_t>(h * w * c));
  for (int k = 0; k < c; ++k)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) CHECK(px[(k * h + y) * w + x] == hwc[(y * w + x) * c + k]);
}

}  // namespace

TEST_CASE("image folder: classes and files sorted, RGB pixels channel-major") {
  TempDir dir;
  const auto root = dir.path() / "root";
  const auto a = make_hwc(2, 3, 3, 1), b = make_hwc(2, 3, 3, 2), c = make_hwc(2, 3, 3, 3);
  // Written out of order; the loader sorts classes and files by name.
  write_bmp(root / "dog" / "c.bmp", 2, 3, 3, c);
  write_png(root / "cat" / "b.png", 2, 3, 3, b);
  write_png(root / "cat" / "a.png", 2, 3, 3, a);
  write_bytes((root / "cat" / "notes.txt").string(), {'h', 'i'});  // not an image: skipped

  auto ds = load_image_folder(root.string());
  REQUIRE(ds->size() == 3);
  CHECK(ds->image_shape() == ImageShape{3, 2, 3});
  CHECK(ds->class_names() == std::vector<std::string>{"cat", "dog"});
  CHECK(ds->labels() == std::vector<int32_t>{0, 0, 1});
  check_chw(*ds, 0, 2, 3, 3, a);
  check_chw(*ds, 1, 2, 3, 3, b);
  check_chw(*ds, 2, 2, 3, 3, c);
  // Float view: pixel / 255 at [channel 2, row 1, column 2].
  CHECK(ds->get(1).image.at(2 * 6 + 1 * 3 + 2) == static_cast<float>(2 + 120 + 10 + 2) / 255.f);
}

TEST_CASE("image folder: channel conversion") {
  TempDir dir;
  const auto root = dir.path() / "root";
  const auto grey = make_hwc(2, 2, 1, 50);
  const std::vector<uint8_t> rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};  // 2 x 2
  write_png(root / "a" / "rgb.png", 2, 2, 3, rgb);
  write_png(root / "b" / "grey.png", 2, 2, 1, grey);

  // Mixed channel counts without a setting: the first mismatching file is named.
  const std::string msg = error_message<FormatError>([&] { load_image_folder(root.string()); });
  CHECK(contains(msg, (root / "b" / "grey.png").string()));
  CHECK(contains(msg, (root / "a" / "rgb.png").string()));

  // channels = 1: stb's luminance (77 r + 150 g + 29 b) >> 8; grey stays as is.
  auto g = load_image_folder(root.string(), {.channels = 1});
  CHECK(g->image_shape() == ImageShape{1, 2, 2});
  CHECK(g->pixels(0)[0] == (255 * 77) >> 8);
  CHECK(g->pixels(0)[1] == (255 * 150) >> 8);
  CHECK(g->pixels(0)[2] == (255 * 29) >> 8);
  CHECK(g->pixels(0)[3] == (10 * 77 + 20 * 150 + 30 * 29) >> 8);
  check_chw(*g, 1, 2, 2, 1, grey);

  // channels = 3: grey is replicated into R, G and B.
  auto c = load_image_folder(root.string(), {.channels = 3});
  CHECK(c->image_shape() == ImageShape{3, 2, 2});
  check_chw(*c, 0, 2, 2, 3, rgb);
  for (int k = 0; k < 3; ++k) CHECK(c->pixels(1)[k * 4 + 3] == grey[3]);
}

TEST_CASE("image folder: size mismatch, resize target, bad files") {
  TempDir dir;
  const auto root = dir.path() / "root";
  write_png(root / "x" / "a.png", 2, 3, 1, make_hwc(2, 3, 1, 0));
  write_png(root / "x" / "b.png", 2, 4, 1, make_hwc(2, 4, 1, 0));
  write_png(root / "y" / "c.png", 2, 3, 1, make_hwc(2, 3, 1, 0));
  const std::string msg = error_message<FormatError>([&] { load_image_folder(root.string()); });
  CHECK(contains(msg, (root / "x" / "b.png").string()));
  CHECK(contains(msg, "2x4"));
  CHECK(contains(msg, "2x3"));

  auto resized = load_image_folder(root.string(), {.height = 4, .width = 6});
  CHECK(resized->image_shape() == ImageShape{1, 4, 6});
  CHECK(resized->size() == 3);

  CHECK_THROWS_AS(load_image_folder(root.string(), {.channels = 2}), UsageError);
  CHECK_THROWS_AS(load_image_folder(root.string(), {.height = 4}), UsageError);

  // An undecodable image names the file.
  std::filesystem::remove(root / "x" / "b.png");
  write_bytes((root / "y" / "d.png").string(), {1, 2, 3, 4, 5});
  CHECK(contains(error_message<FormatError>([&] { load_image_folder(root.string()); }),
                 (root / "y" / "d.png").string()));

  // An empty class folder, an empty root, a missing root.
  const auto empty_class = dir.path() / "r2" / "only";
  std::filesystem::create_directories(empty_class);
  CHECK(
      contains(error_message<FormatError>([&] { load_image_folder((dir.path() / "r2").string()); }),
               empty_class.string()));
  std::filesystem::create_directories(dir.path() / "r3");
  CHECK_THROWS_AS(load_image_folder((dir.path() / "r3").string()), FormatError);
  CHECK_THROWS_AS(load_image_folder((dir.path() / "none").string()), IoError);
}

TEST_CASE("image folder: a header declaring a huge image is rejected before decoding") {
  TempDir dir;
  const auto root = dir.path() / "root";
  std::filesystem::create_directories(root / "c");
  // 18 header bytes declaring 352526 x 232 x 3 bytes (245 MB), then 8 bytes:
  // stb would allocate the whole image and decode it from nothing.
  const std::string text = "P6\n352526 232\n255\n" + std::string(8, '\7');
  const std::vector<uint8_t> ppm(text.begin(), text.end());
  const std::string f = (root / "c" / "huge.ppm").string();
  write_bytes(f, ppm);
  for (int channels : {0, 1, 3}) {
    CAPTURE(channels);
    const std::string msg = error_message<FormatError>(
        [&] { load_image_folder(root.string(), {.channels = channels}); });
    CHECK(contains(msg, f + ": image declares 352526x232 pixels"));
    CHECK(contains(msg, "over the limit of " + std::to_string(kMaxImagePixels) + " pixels"));
  }

  // The limit is max_pixels, inclusive: a 2 x 3 image passes at 6, not at 5.
  std::filesystem::remove(f);
  write_png(root / "c" / "small.png", 2, 3, 1, make_hwc(2, 3, 1, 0));
  CHECK(load_image_folder(root.string(), {.max_pixels = 6})->size() == 1);
  CHECK(contains(
      error_message<FormatError>([&] { load_image_folder(root.string(), {.max_pixels = 5}); }),
      "3x2 pixels (WxH, 6 in all), over the limit of 5 pixels"));
  CHECK_THROWS_AS(load_image_folder(root.string(), {.max_pixels = 0}), UsageError);
}

TEST_CASE("image folder: truncated, flipped magic, foreign and zero-length files name the file") {
  TempDir dir;
  const auto root = dir.path() / "root";
  write_png(root / "c" / "good.png", 4, 5, 3, make_hwc(4, 5, 3, 1));
  const std::vector<uint8_t> png = read_bytes((root / "c" / "good.png").string());
  const std::string bad = (root / "c" / "z.png").string();
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
  };
  std::vector<uint8_t> flipped = png;
  flipped[1] ^= 0x01;  // 'P' of the PNG signature
  const std::string text = "class,label\n";
  for (const Case& c :
       {Case{"truncated in the header", {png.begin(), png.begin() + 20}},
        Case{"truncated in the data", {png.begin(), png.begin() + png.size() / 2}},
        Case{"flipped magic byte", flipped},
        Case{"a text file named .png", {text.begin(), text.end()}}, Case{"zero-length", {}}}) {
    CAPTURE(c.what);
    write_bytes(bad, c.bytes);
    const std::string msg = error_message<FormatError>([&] { load_image_folder(root.string()); });
    CHECK(contains(msg, bad + ": cannot decode image"));
  }
}

TEST_CASE("resize_bilinear: known values") {
  // [1, 2, 2] -> [1, 4, 4]: sample positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
  const std::vector<uint8_t> src = {0, 100, 200, 255};
  const auto up = resize_bilinear(src, {1, 2, 2}, 4, 4);
  REQUIRE(up.size() == 16);
  CHECK(up[0] == 0);
  CHECK(up[1] == 25);  // row 0 at x = 0.25
  CHECK(up[2] == 75);  // x = 0.75
  CHECK(up[3] == 100);
  CHECK(up[5] == 72);  // (0.25, 0.25): 25 + 0.25 * (213.75 - 25) = 72.19
  CHECK(up[15] == 255);
  CHECK(up[12] == 200);

  // [1, 4, 4] -> [1, 2, 2] samples at 0.5 and 2.5: the mean of each 2 x 2 block.
  std::vector<uint8_t> big(16);
  for (int i = 0; i < 16; ++i) big[i] = static_cast<uint8_t>(i * 10);
  const auto down = resize_bilinear(big, {1, 4, 4}, 2, 2);
  CHECK(down == std::vector<uint8_t>{25, 45, 105, 125});  // (0+10+40+50)/4 = 25 ...

  // Same size: unchanged; channels resized independently.
  const std::vector<uint8_t> two = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK(resize_bilinear(two, {2, 2, 2}, 2, 2) == two);
  CHECK(resize_bilinear(two, {2, 2, 2}, 1, 1) ==
        std::vector<uint8_t>{3, 7});  // 2.5, 6.5 round half away
  CHECK_THROWS_AS(resize_bilinear(two, {1, 2, 2}, 2, 2), UsageError);
}
