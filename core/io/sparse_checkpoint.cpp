// Compact checkpoints: bitmask + nonzero values (layout in sparse_checkpoint.h).
#include "sparse_checkpoint.h"

#include <bit>
#include <cstring>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "../error.h"
#include "file.h"

namespace spruce::io {

namespace {

const std::string kShape = "sparse.shape/";
const std::string kBits = "sparse.bits/";
const std::string kValues = "sparse.values/";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

uint32_t bits_of(float v) { return std::bit_cast<uint32_t>(v); }

std::string dims_text(const Shape& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? " " : "") + std::to_string(shape[i]);
  return s;
}

}  // namespace

bool is_compressed(const Checkpoint& ckpt) { return ckpt.has_meta(kSparseFormatKey); }

Checkpoint compress_checkpoint(const Checkpoint& ckpt) {
  Checkpoint out;
  out.source = ckpt.source;
  out.meta = ckpt.meta;
  out.set_meta(kSparseFormatKey, "1");
  for (const auto& [name, t] : ckpt.tensors) {
    const int64_t n = t.numel();
    const float* d = t.data();
    int64_t nnz = 0;
    bool ones = true;
    for (int64_t i = 0; i < n; ++i)
      if (bits_of(d[i]) != 0) ++nnz, ones = ones && d[i] == 1.f && bits_of(d[i]) == bits_of(1.f);
    const int64_t words = (n + 31) / 32;
    const int64_t sparse_floats = words + (ones ? 0 : nnz);
    if (sparse_floats >= n) {  // dense is no bigger
      out.tensors.emplace_back(name, t);
      continue;
    }
    Tensor bits = Tensor::zeros({words});
    Tensor values = Tensor::empty({ones ? 0 : nnz});
    std::vector<uint32_t> w(static_cast<size_t>(words), 0);
    float* v = values.data();
    for (int64_t i = 0, k = 0; i < n; ++i)
      if (bits_of(d[i]) != 0) {
        w[static_cast<size_t>(i / 32)] |= uint32_t{1} << (i % 32);
        if (!ones) v[k++] = d[i];
      }
    std::memcpy(bits.data(), w.data(), w.size() * sizeof(uint32_t));
    out.set_meta(kShape + name, dims_text(t.shape()));
    out.tensors.emplace_back(kBits + name, bits);
    if (!ones) out.tensors.emplace_back(kValues + name, values);
  }
  return out;
}

Checkpoint expand_checkpoint(const Checkpoint& ckpt) {
  const std::string src = ckpt.source.empty() ? std::string("checkpoint") : ckpt.source;
  auto fail = [&](const std::string& what) -> void { throw FormatError(src + ": " + what); };
  const std::string& format = ckpt.meta_value(kSparseFormatKey);
  if (format != "1")
    fail("metadata '" + std::string(kSparseFormatKey) + "' is '" + format +
         "', expected 1 (newer spruce?)");
  Checkpoint out;
  out.source = ckpt.source;
  std::unordered_map<std::string, const Tensor*> values;
  for (const auto& [key, value] : ckpt.meta)
    if (!starts_with(key, "sparse.")) out.meta.emplace_back(key, value);
  for (const auto& [name, t] : ckpt.tensors)
    if (starts_with(name, kValues)) values.emplace(name.substr(kValues.size()), &t);
  size_t used_values = 0;
  for (const auto& [name, t] : ckpt.tensors) {
    if (starts_with(name, kValues)) continue;
    if (!starts_with(name, kBits)) {
      if (starts_with(name, "sparse.")) fail("tensor '" + name + "': unknown sparse part");
      out.tensors.emplace_back(name, t);
      continue;
    }
    const std::string base = name.substr(kBits.size());
    const std::string field = "tensor '" + base + "'";
    if (!ckpt.has_meta(kShape + base))
      fail(field + ": metadata '" + kShape + base + "' is missing");
    // The dense shape: non-negative integers whose product fits.
    Shape shape;
    {
      std::istringstream in(ckpt.meta_value(kShape + base));
      std::string tok;
      while (in >> tok) {
        size_t used = 0;
        long long d = -1;
        try {
          d = std::stoll(tok, &used);
        } catch (const std::exception&) {
        }
        if (used != tok.size() || d < 0 || shape.size() >= 8)
          fail(field + ": shape '" + ckpt.meta_value(kShape + base) +
               "' is not up to 8 non-negative integers");
        shape.push_back(d);
      }
    }
    if (!dims_fit_int64(shape)) fail(field + ": shape " + shape_str(shape) + " overflows");
    const int64_t n = numel_of(shape);
    const int64_t words = (n + 31) / 32;
    if (t.dim() != 1 || t.numel() != words)
      fail(field + ": bitmask has " + std::to_string(t.numel()) + " words, expected " +
           std::to_string(words) + " for shape " + shape_str(shape));
    std::vector<uint32_t> w(static_cast<size_t>(words));
    std::memcpy(w.data(), t.data(), w.size() * sizeof(uint32_t));
    int64_t nnz = 0;
    for (uint32_t x : w) nnz += std::popcount(x);
    if (n % 32 != 0 && words > 0 && (w.back() >> (n % 32)) != 0)
      fail(field + ": bitmask marks a position past the tensor's " + std::to_string(n) +
           " elements");
    const auto it = values.find(base);
    const Tensor* vals = it == values.end() ? nullptr : it->second;
    if (vals) {
      ++used_values;
      if (vals->dim() != 1 || vals->numel() != nnz)
        fail(field + ": " + std::to_string(vals->numel()) + " values for " + std::to_string(nnz) +
             " set bits");
    }
    Tensor dense = Tensor::zeros(shape);
    float* d = dense.data();
    const float* v = vals ? vals->data() : nullptr;
    for (int64_t i = 0, k = 0; i < n; ++i)
      if ((w[static_cast<size_t>(i / 32)] >> (i % 32)) & 1u) d[i] = v ? v[k++] : 1.f;
    out.tensors.emplace_back(base, dense);
  }
  if (used_values != values.size()) fail("values without a bitmask (a sparse.values/ tensor)");
  for (const auto& [key, value] : ckpt.meta)
    if (starts_with(key, kShape) && !ckpt.has_tensor(kBits + key.substr(kShape.size())))
      fail("metadata '" + key + "' has no bitmask tensor");
  std::unordered_map<std::string, int> seen;
  for (const auto& nt : out.tensors)
    if (++seen[nt.first] > 1) fail("tensor '" + nt.first + "' is stored twice");
  return out;
}

}  // namespace spruce::io
