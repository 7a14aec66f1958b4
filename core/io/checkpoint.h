// The checkpoint container: one file holding text metadata and named float
// tensors, protected by a CRC-32 and written atomically.
//
// core knows nothing of models, optimizers or pruning: callers decide what the
// metadata keys mean (model name, config, epoch, step, RNG state, ... as text)
// and how tensors are named ("model.layer1.0.conv1.weight", "mask.*",
// "optim.velocity.*", ...).
//
// Layout on disk, all integers little-endian:
//
//   offset  size      field
//   0       8         magic "SPRUCECK"
//   8       4         u32 format version (kCheckpointVersion = 1)
//   12      4         u32 M, number of metadata entries, then M times:
//                       u32 key length, key bytes,
//                       u64 value length, value bytes
//           4         u32 T, number of tensors, then T times:
//                       u32 name length, name bytes,
//                       u32 ndim, ndim x i64 dims (a scalar has ndim 0),
//                       numel x float32 data, row-major
//   end-4   4         u32 CRC-32 (zlib) of every byte before it
//
// Loading reads the file, checks the magic, the version, then the CRC (a file
// that fails it and whose length fields declare more bytes than it has is
// reported as "truncated: expected N bytes, file has M"), then every length
// against the bytes that remain before allocating anything.
// Every problem is a one-line FormatError (IoError if the file cannot be read)
// that names the file.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../tensor.h"

namespace spruce::io {

/// The format version this build writes and the newest it reads.
inline constexpr uint32_t kCheckpointVersion = 1;

/// What one checkpoint file holds. Order is kept as inserted.
struct Checkpoint {
  std::vector<std::pair<std::string, std::string>> meta;
  std::vector<std::pair<std::string, Tensor>> tensors;
  /// The path this checkpoint was loaded from (for messages); empty if new.
  std::string source;

  /// Sets a metadata value, replacing an existing key or appending a new one.
  void set_meta(const std::string& key, std::string value);
  bool has_meta(const std::string& key) const;
  /// The value of `key`; FormatError naming the source when it is missing.
  const std::string& meta_value(const std::string& key) const;

  /// Sets a tensor (the handle is stored, not copied), replacing or appending.
  void set_tensor(const std::string& name, const Tensor& t);
  bool has_tensor(const std::string& name) const;
  /// The tensor named `name`; FormatError naming the source when missing.
  const Tensor& tensor(const std::string& name) const;
};

/// Writes `ckpt` to `path` atomically (temporary file, fflush, fsync,
/// rename). Throws UsageError for duplicate names or undefined tensors and
/// IoError when writing fails, in which case any previous file at `path` is
/// left intact and no temporary file remains.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);

/// Reads and fully validates a checkpoint (see the layout above).
Checkpoint load_checkpoint(const std::string& path);

}  // namespace spruce::io
