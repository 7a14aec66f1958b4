// Tensor: a float32, contiguous, row-major (NCHW for images) array with shared
// storage, an optional gradient and the autograd node that produced it.
//
// A Tensor is a cheap handle (a shared pointer): copying it aliases the same
// data, like a PyTorch tensor. Views exist only where they are free: reshape of
// contiguous data shares the storage. Everything else allocates a new result.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace spruce {

using Shape = std::vector<int64_t>;

/// Number of elements of a shape (1 for a scalar, shape {}).
int64_t numel_of(const Shape& shape);
/// "[2, 3, 4]" for messages.
std::string shape_str(const Shape& shape);

/// Identifies the contents of a storage: `storage` is unique to one Storage
/// for the life of the process (never reused), and `writes` changes every time
/// someone takes mutable access to it. Equal versions mean equal contents, so
/// a cache derived from a tensor (compressed inference weights) can check it
/// is current with two compares per call.
struct ContentVersion {
  uint64_t storage = 0;
  uint64_t writes = 0;
  bool operator==(const ContentVersion&) const = default;
};

/// A 64-byte aligned float buffer. Tensors share it through shared_ptr.
/// Big buffers are recycled: a freed one is kept for a later request of the
/// same or a somewhat smaller size (core/tensor.cpp), so contents start
/// undefined either way.
/// Every mutable data() call counts as a write (see ContentVersion): writers
/// must take the pointer afresh for each change (optimizer steps, loads,
/// masks, fills and copies all do), never keep one across calls.
class Storage {
 public:
  explicit Storage(int64_t n);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  float* data() {
    writes_.fetch_add(1, std::memory_order_relaxed);
    return data_;
  }
  const float* data() const { return data_; }
  int64_t size() const { return size_; }
  ContentVersion version() const { return {id_, writes_.load(std::memory_order_relaxed)}; }

 private:
  float* data_ = nullptr;
  int64_t size_ = 0;
  size_t block_bytes_ = 0;  // a big buffer's whole block (may exceed size_)
  uint64_t id_ = 0;
  std::atomic<uint64_t> writes_{0};
};

struct Node;
struct TensorImpl;
class Generator;

class Tensor {
 public:
  /// An undefined tensor (no storage); `defined()` is false.
  Tensor() = default;

  // ---- creation ----
  /// Uninitialised contents: only for results that are fully overwritten.
  static Tensor empty(const Shape& shape);
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor from_data(const Shape& shape, std::span<const float> values);
  static Tensor from_data(const Shape& shape, std::initializer_list<float> values);
  /// Seeded normal(mean, std) and uniform[lo, hi) from `gen`.
  static Tensor randn(const Shape& shape, Generator& gen, float mean = 0.f, float std = 1.f);
  static Tensor rand(const Shape& shape, Generator& gen, float lo = 0.f, float hi = 1.f);

  // ---- basic facts ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  /// Size of dimension d; negative d counts from the end.
  int64_t size(int64_t d) const;
  int64_t numel() const;
  float* data();
  const float* data() const;
  std::span<float> span() { return {data(), static_cast<size_t>(numel())}; }
  std::span<const float> span() const { return {data(), static_cast<size_t>(numel())}; }
  /// Value of a one-element tensor.
  float item() const;
  /// Element at a flat index (debugging and tests).
  float at(int64_t flat_index) const;

  // ---- copies and views ----
  /// A new tensor with its own storage and no autograd history.
  Tensor clone() const;
  /// Shares storage, drops autograd history (like torch's detach()).
  Tensor detach() const;
  /// Copies values from `src` (same numel) into this tensor's storage.
  void copy_from(const Tensor& src);
  void fill_(float value);
  void zero_() { fill_(0.f); }
  /// True when both handles point at the same storage.
  bool shares_storage_with(const Tensor& other) const;
  /// The storage's content version: changes with every mutable data(),
  /// span(), copy_from() or fill_() on any handle sharing the storage.
  ContentVersion content_version() const;

  // ---- autograd ----
  bool requires_grad() const;
  /// Marks a leaf as needing a gradient (parameters). Returns *this.
  Tensor& set_requires_grad(bool value);
  /// Gradient accumulated by backward(); undefined until the first backward.
  const Tensor& grad() const;
  /// The gradient, created as zeros if missing: backward functions add into it.
  Tensor& grad_or_zeros();
  /// Drops the gradient (cheaper than zeroing; the next backward re-creates it).
  void zero_grad();
  /// Replaces the gradient (e.g. to restore one from a checkpoint).
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> node);
  bool is_leaf() const { return grad_fn() == nullptr; }
  /// Runs reverse-mode differentiation from this tensor. A one-element tensor
  /// gets the seed gradient 1; otherwise `seed` (same shape) must be given.
  void backward(const Tensor& seed = Tensor()) const;

  /// "Tensor[2, 3] {0.1, 0.2, ...}" with the first few values.
  std::string to_string(int64_t max_values = 8) const;

  /// Identity of the underlying impl (graph traversal).
  TensorImpl* impl() const { return impl_.get(); }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<TensorImpl> impl_;
  friend Tensor make_view(const Tensor& base, const Shape& shape);
};

/// The state behind a Tensor handle.
struct TensorImpl {
  Shape shape;
  std::shared_ptr<Storage> storage;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

/// A tensor that shares `base`'s storage with another shape of equal numel
/// (no autograd: use ops::reshape for a differentiable view).
Tensor make_view(const Tensor& base, const Shape& shape);

}  // namespace spruce
