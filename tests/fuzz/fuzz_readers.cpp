// The fuzzed readers and their seed corpus (see fuzz_readers.h).
#include "tests/fuzz/fuzz_readers.h"

#include <stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/io/checkpoint.h"
#include "core/io/file.h"
#include "core/io/npz.h"
#include "core/io/sparse_checkpoint.h"
#include "data/cifar10.h"
#include "data/idx.h"
#include "data/image_folder.h"

namespace spruce::fuzz {
namespace {

namespace fs = std::filesystem;

// A private folder for the scratch files of this process, removed at exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "spruce_fuzz_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("spruce fuzz: mkdtemp");
      std::abort();
    }
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const fs::path& scratch() {
  static const ScratchDir dir;
  return dir.path();
}

// Writes `bytes` to `path`; a failure here is the harness's, not the reader's.
void put_file(const fs::path& path, Bytes bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr ||
      (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) ||
      std::fclose(f) != 0) {
    std::perror(("spruce fuzz: writing " + path.string()).c_str());
    std::abort();
  }
}

std::vector<uint8_t> get_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> deflate_with(Bytes bytes, int window_bits) {
  z_stream zs{};
  if (deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> out(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 32);
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

}  // namespace

std::vector<uint8_t> gzip(Bytes bytes) { return deflate_with(bytes, 15 + 16); }
std::vector<uint8_t> raw_deflate(Bytes bytes) { return deflate_with(bytes, -15); }

std::vector<uint8_t> zip_one(const std::string& name, Bytes content, bool deflate) {
  const std::vector<uint8_t> data =
      deflate ? raw_deflate(content) : std::vector<uint8_t>(content.begin(), content.end());
  const uint32_t crc = io::crc32_update(0, content);
  const uint16_t method = deflate ? 8 : 0;
  std::vector<uint8_t> z;
  // Local header, then the data.
  put_le(z, 0x04034b50, 4);
  put_le(z, 20, 2);
  put_le(z, 0, 2);
  put_le(z, method, 2);
  put_le(z, 0, 4);  // time and date
  put_le(z, crc, 4);
  put_le(z, data.size(), 4);
  put_le(z, content.size(), 4);
  put_le(z, name.size(), 2);
  put_le(z, 0, 2);
  z.insert(z.end(), name.begin(), name.end());
  z.insert(z.end(), data.begin(), data.end());
  // Central directory with one entry, then the end record.
  const size_t cd_offset = z.size();
  put_le(z, 0x02014b50, 4);
  put_le(z, 20, 2);
  put_le(z, 20, 2);
  put_le(z, 0, 2);
  put_le(z, method, 2);
  put_le(z, 0, 4);
  put_le(z, crc, 4);
  put_le(z, data.size(), 4);
  put_le(z, content.size(), 4);
  put_le(z, name.size(), 2);
  put_le(z, 0, 2);  // extra
  put_le(z, 0, 2);  // comment
  put_le(z, 0, 2);  // disk
  put_le(z, 0, 2);  // internal attributes
  put_le(z, 0, 4);  // external attributes
  put_le(z, 0, 4);  // local header offset
  z.insert(z.end(), name.begin(), name.end());
  const size_t cd_size = z.size() - cd_offset;
  put_le(z, 0x06054b50, 4);
  put_le(z, 0, 2);
  put_le(z, 0, 2);
  put_le(z, 1, 2);
  put_le(z, 1, 2);
  put_le(z, cd_size, 4);
  put_le(z, cd_offset, 4);
  put_le(z, 0, 2);
  return z;
}

void read_idx(Bytes input) {
  if (input.empty()) return;
  const uint8_t mode = input[0];
  const Bytes body = input.subspan(1);
  const fs::path path = scratch() / "input.idx";
  put_file(path, (mode & 1) ? Bytes(gzip(body)) : body);
  if (mode & 2)
    data::read_idx_labels(path.string());
  else
    data::read_idx_images(path.string());
}

void read_cifar10(Bytes input) {
  if (input.empty()) return;
  const uint8_t mode = input[0];
  const Bytes body = input.subspan(1);
  const fs::path path = scratch() / "input.bin";
  put_file(path, (mode & 1) ? Bytes(gzip(body)) : body);
  if (mode & 2) {
    data::read_cifar10_meta(path.string());
  } else {
    std::vector<uint8_t> pixels;
    std::vector<int32_t> labels;
    data::read_cifar10_batch(path.string(), pixels, labels);
  }
}

void read_image(Bytes input) {
  if (input.empty()) return;
  const uint8_t mode = input[0];
  const Bytes body = input.subspan(1);
  const fs::path root = scratch() / "images";
  fs::create_directories(root / "c");
  put_file(root / "c" / "x.png", body);  // stb decodes by content, not by name
  data::ImageFolderOptions options;
  options.channels = (mode % 3 == 0) ? 0 : (mode % 3 == 1) ? 1 : 3;
  if (mode & 4) {
    options.height = 5;
    options.width = 7;
  }
  data::load_image_folder(root.string(), options);
}

// The checkpoint file of a checkpoint or compact input (mode bit 0: fix the CRC).
fs::path put_checkpoint_input(Bytes input) {
  std::vector<uint8_t> body(input.begin() + 1, input.end());
  if ((input[0] & 1) && body.size() >= 4) {
    const uint32_t crc = io::crc32_update(0, {body.data(), body.size() - 4});
    std::memcpy(body.data() + body.size() - 4, &crc, 4);
  }
  const fs::path path = scratch() / "input.ckpt";
  put_file(path, body);
  return path;
}

void read_checkpoint(Bytes input) {
  if (input.empty()) return;
  io::load_checkpoint(put_checkpoint_input(input).string());
}

void read_compact(Bytes input) {
  if (input.empty()) return;
  const io::Checkpoint ck = io::load_checkpoint(put_checkpoint_input(input).string());
  if (io::is_compressed(ck)) io::expand_checkpoint(ck);
}

void read_npz(Bytes input) {
  if (input.empty()) return;
  const uint8_t mode = input[0] % 3;
  const Bytes body = input.subspan(1);
  const fs::path path = scratch() / "input.npz";
  put_file(path, mode == 0 ? std::vector<uint8_t>(body.begin(), body.end())
                           : zip_one("a.npy", body, mode == 2));
  io::read_npz(path.string());
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all{{"idx", read_idx},         {"cifar10", read_cifar10},
                                       {"image", read_image},     {"checkpoint", read_checkpoint},
                                       {"compact", read_compact}, {"npz", read_npz}};
  return all;
}

namespace {

std::vector<uint8_t> with_mode(uint8_t mode, Bytes body) {
  std::vector<uint8_t> out(body.size() + 1);
  out[0] = mode;
  std::copy(body.begin(), body.end(), out.begin() + 1);
  return out;
}

std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(i * 37 + seed * 11);
  return out;
}

std::vector<uint8_t> idx_file(uint32_t magic, const std::vector<uint32_t>& dims,
                              const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  for (uint32_t d : dims) put_be32(out, d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void append_to_vector(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

// "{'descr': ..., 'fortran_order': ..., 'shape': ..., }" as an .npy of the
// given major version, padded to 64 bytes, followed by `data`.
std::vector<uint8_t> npy(int major, const std::string& dict, Bytes data) {
  std::string header = dict;
  const size_t prefix = 6 + 2 + (major == 1 ? 2 : 4);
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<uint8_t> out{0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
  put_le(out, header.size(), major == 1 ? 2 : 4);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <class T>
std::vector<uint8_t> raw_values(std::initializer_list<T> values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

}  // namespace

std::vector<Seed> seeds(const std::string& target) {
  std::vector<Seed> out;
  if (target == "idx") {
    const std::vector<uint8_t> images = idx_file(0x00000803u, {2, 3, 4}, pattern(24, 1));
    const std::vector<uint8_t> labels = idx_file(0x00000801u, {5}, {0, 1, 9, 3, 7});
    out.push_back({"images", with_mode(0, images)});
    out.push_back({"images-gz", with_mode(1, images)});
    out.push_back({"images-gzip-file", with_mode(0, gzip(images))});
    out.push_back({"labels", with_mode(2, labels)});
    out.push_back({"labels-gz", with_mode(3, labels)});
  } else if (target == "cifar10") {
    std::vector<uint8_t> batch = pattern(2 * data::kCifar10RecordBytes, 2);
    batch[0] = 3;
    batch[data::kCifar10RecordBytes] = 9;
    const std::vector<uint8_t> one(batch.begin(), batch.begin() + data::kCifar10RecordBytes);
    out.push_back({"batch", with_mode(0, batch)});
    out.push_back({"batch-gz", with_mode(1, one)});
    out.push_back({"batch-gzip-file", with_mode(0, gzip(one))});
    std::string meta;
    for (const std::string& name : data::cifar10_class_names()) meta += name + "\n";
    out.push_back({"meta", with_mode(2, std::vector<uint8_t>(meta.begin(), meta.end()))});
  } else if (target == "image") {
    struct Image {
      const char* name;
      int w, h, comp;
      uint8_t mode;
    };
    for (const Image& im : {Image{"png-grey", 4, 3, 1, 0}, Image{"png-rgb", 3, 2, 3, 2},
                            Image{"png-rgba", 2, 2, 4, 4}, Image{"png-grey-alpha", 3, 3, 2, 1}}) {
      std::vector<uint8_t> file;
      const std::vector<uint8_t> px = pattern(static_cast<size_t>(im.w * im.h * im.comp), 3);
      stbi_write_png_to_func(append_to_vector, &file, im.w, im.h, im.comp, px.data(),
                             im.w * im.comp);
      out.push_back({im.name, with_mode(im.mode, file)});
    }
    const std::vector<uint8_t> rgb = pattern(4 * 3 * 3, 4);
    std::vector<uint8_t> bmp, tga, jpg;
    stbi_write_bmp_to_func(append_to_vector, &bmp, 4, 3, 3, rgb.data());
    stbi_write_tga_to_func(append_to_vector, &tga, 4, 3, 3, rgb.data());
    stbi_write_jpg_to_func(append_to_vector, &jpg, 4, 3, 3, rgb.data(), 90);
    out.push_back({"bmp", with_mode(0, bmp)});
    out.push_back({"tga", with_mode(5, tga)});
    out.push_back({"jpg", with_mode(0, jpg)});
    const std::string pgm = "P5\n3 2\n255\n", ppm = "P6\n2 2\n255\n";
    std::vector<uint8_t> pgm_file(pgm.begin(), pgm.end()), ppm_file(ppm.begin(), ppm.end());
    const std::vector<uint8_t> grey = pattern(6, 5), colour = pattern(12, 6);
    pgm_file.insert(pgm_file.end(), grey.begin(), grey.end());
    ppm_file.insert(ppm_file.end(), colour.begin(), colour.end());
    out.push_back({"pgm", with_mode(4, pgm_file)});
    out.push_back({"ppm", with_mode(1, ppm_file)});
  } else if (target == "checkpoint") {
    io::Checkpoint ck;
    ck.set_meta("model.name", "resnet20");
    ck.set_meta("train.epoch", "1");
    ck.set_tensor("model/w", Tensor::from_data({2, 3}, {-0.5f, -0.25f, 0.f, 0.25f, 0.5f, 0.75f}));
    ck.set_tensor("optim/s", Tensor::from_data(Shape{}, {3.5f}));
    ck.set_tensor("empty", Tensor::empty(Shape{0, 4}));
    const fs::path path = scratch() / "seed.ckpt";
    io::save_checkpoint(path.string(), ck);
    const std::vector<uint8_t> file = get_file(path);
    out.push_back({"checkpoint", with_mode(0, file)});
    out.push_back({"checkpoint-fixed-crc", with_mode(1, file)});
  } else if (target == "compact") {
    io::Checkpoint ck;
    ck.set_meta("model.name", "resnet20");
    Tensor w = Tensor::zeros({4, 3, 3, 3});
    Tensor mask = Tensor::zeros({4, 3, 3, 3});
    for (int64_t i = 0; i < w.numel(); i += 11)
      w.data()[i] = 0.5f + static_cast<float>(i), mask.data()[i] = 1.f;
    ck.set_tensor("model/w", w);
    ck.set_tensor("model/w_mask", mask);
    ck.set_tensor("model/b", Tensor::from_data({2}, {1.f, -2.f}));
    const fs::path path = scratch() / "seed.ckpt";
    io::save_checkpoint(path.string(), io::compress_checkpoint(ck));
    const std::vector<uint8_t> file = get_file(path);
    out.push_back({"compact", with_mode(0, file)});
    out.push_back({"compact-fixed-crc", with_mode(1, file)});
  } else if (target == "npz") {
    const fs::path path = scratch() / "seed.npz";
    io::write_npz(path.string(), {{"layer1.0.conv1.weight",
                                   Tensor::from_data({2, 3}, {0.f, 1.5f, 3.f, 4.5f, 6.f, 7.5f})},
                                  {"fc.bias", Tensor::from_data({4}, {0.f, -1.f, -2.f, -3.f})}});
    out.push_back({"npz", with_mode(0, get_file(path))});
    const std::vector<uint8_t> f4 = raw_values<float>({1.f, 2.f, 3.f, 4.f, 5.f, 6.f});
    const std::vector<uint8_t> f8 = raw_values<double>({1., 2., 3., 4., 5., 6.});
    const std::vector<uint8_t> c_order =
        npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f4);
    const std::vector<uint8_t> fortran =
        npy(2, "{'descr': '<f8', 'fortran_order': True, 'shape': (3, 2), }", f8);
    const std::vector<uint8_t> scalar =
        npy(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", raw_values<float>({7.f}));
    out.push_back({"npz-deflated", with_mode(0, zip_one("x.npy", c_order, true))});
    out.push_back({"npy-c-order", with_mode(1, c_order)});
    out.push_back({"npy-fortran-f8", with_mode(2, fortran)});
    out.push_back({"npy-scalar", with_mode(1, scalar)});
  }
  return out;
}

}  // namespace spruce::fuzz
