// The readers under fuzzing, each as a function of one byte string, shared
// by the libFuzzer entry points (fuzz_main.cpp) and the doctest replay of
// seeds and crash regressions (test_fuzz_replay.cpp).
//
// Every function writes its input to a scratch file and calls the real
// reader on it, exactly as a tool would open a file. The first input byte is a
// mode that picks a variant, so one target reaches several paths:
//
//   idx         bit 0: gzip-compress the rest first; bit 1: label file (else image file)
//   cifar10     bit 0: gzip-compress the rest first; bit 1: batches.meta.txt (else a batch)
//   image       mode % 3: channels 0 (keep), 1 or 3; bit 2: resize to 5 x 7 (the
//               reader's own size limit, data::kMaxImagePixels, rejects huge
//               declared images before stb allocates them)
//   checkpoint  bit 0: overwrite the last 4 bytes with the CRC-32 of the others,
//               so the structure behind the CRC check is reached
//   compact     a compact checkpoint (core/io/sparse_checkpoint.h): loaded, then
//               expanded when marked compact; bit 0 as for checkpoint
//   npz         mode % 3: 0 the rest is an .npz archive; 1 or 2 the rest is one
//               .npy array, put into a valid archive stored (1) or deflated (2)
//               with a correct CRC, so the .npy parser is reached
//
// A reader may throw spruce::Error (FormatError, IoError, UsageError) for a
// bad input and nothing else; any other exception or crash is a bug.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace spruce::fuzz {

using Bytes = std::span<const uint8_t>;
using Reader = void (*)(Bytes);

void read_idx(Bytes input);
void read_cifar10(Bytes input);
void read_image(Bytes input);
void read_checkpoint(Bytes input);
void read_compact(Bytes input);
void read_npz(Bytes input);

/// The fuzz targets by name ("idx", "cifar10", "image", "checkpoint", "compact", "npz").
struct Target {
  const char* name;
  Reader read;
};
const std::vector<Target>& targets();

/// Valid inputs of each target (mode byte included): the seed corpus.
struct Seed {
  std::string name;
  std::vector<uint8_t> bytes;
};
std::vector<Seed> seeds(const std::string& target);

/// gzip (RFC 1952) and raw deflate of `bytes`, with zlib.
std::vector<uint8_t> gzip(Bytes bytes);
std::vector<uint8_t> raw_deflate(Bytes bytes);

/// A ZIP archive holding one entry `name` with `content`, stored or deflated,
/// with correct sizes and CRC (what numpy.savez writes, minus ZIP64).
std::vector<uint8_t> zip_one(const std::string& name, Bytes content, bool deflate);

}  // namespace spruce::fuzz
