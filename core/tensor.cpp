// Tensor storage (with a cache of big freed blocks), creation and the
// autograd entry point.
#include "tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <unordered_set>

#include "autograd.h"
#include "error.h"
#include "random.h"

namespace spruce {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw UsageError("negative dimension in shape " + shape_str(shape));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

// ---------------------------------------------------------------------------
// Big buffers: a cache of freed blocks
//
// A training step allocates the same activation and gradient buffers in the
// same sizes every step and frees them all by the end of backward. Taken from
// malloc, each big buffer is fresh mmap memory every time: the kernel
// zero-fills every page on first touch (about a tenth of a ResNet-20 step).
// Freed big blocks are therefore kept and handed out again for a request of
// exactly the same (page-rounded) size, or failing that the smallest cached
// block of at most kMaxSlack times the size.
//
// The slack matters for inference: a forward without a graph keeps only a
// layer's input and output alive, so the live peak (and the cache bound
// below) is small, while every layer asks for a size of its own. With exact
// sizes only, the cache then evicted one size for the next and every output
// was fresh memory: spruce-eval spent a quarter of its time in page faults
// (issue 14). A freed layer's buffer now serves the next layers of similar
// size. Training steps, where every size has its exact block after the first
// step, are unchanged.
//
// The cache is bounded: memory held (live + cached) may exceed the largest
// amount ever live at once by kHeadroom; beyond that a miss first returns
// cached blocks to the OS, least recently freed first. Holding exactly the
// live peak would be too tight: sizes that peak at different moments of a
// step then evict each other every step (a steady stream of misses), while
// with the headroom the misses stop after the first step. Measured on
// ResNet-20 and MobileNetV1 training, the blocks a miss-free step needs are
// 5-10% above the live peak.

namespace {

constexpr size_t kBigBytes = size_t{256} << 10;  // smaller buffers use aligned_alloc
constexpr size_t kPage = 4096;
constexpr double kHeadroom = 1.5;  // held / live peak before a miss releases blocks
constexpr size_t kMaxSlack = 2;    // a request may take a cached block up to this many times larger

class BlockCache {
 public:
  /// A block of at least `bytes` (page-rounded); its size is stored in *got.
  void* take(size_t bytes, size_t* got) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Exact size first, most recently freed first (its pages are the
      // likeliest to be in cache); else the smallest block within the slack.
      size_t best = free_.size();
      for (size_t i = free_.size(); i-- > 0;) {
        const size_t b = free_[i].bytes;
        if (b == bytes) {
          best = i;
          break;
        }
        if (b > bytes && b <= kMaxSlack * bytes && (best == free_.size() || b < free_[best].bytes))
          best = i;
      }
      if (best < free_.size()) {
        const Block blk = free_[best];
        cached_ -= blk.bytes;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
        live_ += blk.bytes;
        *got = blk.bytes;
        return blk.ptr;
      }
      const size_t peak = std::max(peak_, live_ + bytes);
      const double limit = kHeadroom * static_cast<double>(peak);
      while (!free_.empty() && static_cast<double>(live_ + cached_ + bytes) > limit) {
        munmap(free_.front().ptr, free_.front().bytes);
        cached_ -= free_.front().bytes;
        free_.erase(free_.begin());
      }
      live_ += bytes;
      peak_ = peak;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::lock_guard<std::mutex> lock(mu_);
      live_ -= bytes;
      throw std::bad_alloc();
    }
    *got = bytes;
    return p;
  }

  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back({p, bytes});
    live_ -= bytes;
    cached_ += bytes;
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  std::mutex mu_;
  std::vector<Block> free_;  // least recently freed first
  size_t live_ = 0;          // bytes handed out and not yet given back
  size_t cached_ = 0;        // bytes in free_
  size_t peak_ = 0;          // the largest live_ so far
};

BlockCache& block_cache() {
  // Never destroyed: Storage objects in other static objects may outlive it.
  static BlockCache* cache = new BlockCache;
  return *cache;
}

size_t storage_bytes(int64_t n) {
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  // Big blocks are whole pages; small ones a multiple of the alignment, as
  // aligned_alloc requires.
  return bytes >= kBigBytes ? (bytes + kPage - 1) / kPage * kPage : (bytes + 63) / 64 * 64;
}

}  // namespace

Storage::Storage(int64_t n) : size_(n) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  const size_t bytes = storage_bytes(n);
  data_ = static_cast<float*>(bytes >= kBigBytes ? block_cache().take(bytes, &block_bytes_)
                                                 : std::aligned_alloc(64, bytes));
  if (!data_) throw std::bad_alloc();
}

Storage::~Storage() {
  if (block_bytes_ > 0)
    block_cache().give(data_, block_bytes_);
  else
    std::free(data_);
}

namespace {
std::shared_ptr<TensorImpl> new_impl(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::make_shared<Storage>(numel_of(shape));
  return impl;
}

TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl) {
  if (!impl) throw UsageError("use of an undefined Tensor");
  return *impl;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape) { return Tensor(new_impl(shape)); }

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.f); }

Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_data(const Shape& shape, std::span<const float> values) {
  if (static_cast<int64_t>(values.size()) != numel_of(shape))
    throw UsageError("from_data: " + std::to_string(values.size()) + " values for shape " +
                     shape_str(shape));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::from_data(const Shape& shape, std::initializer_list<float> values) {
  return from_data(shape, std::span<const float>(values.begin(), values.size()));
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, float mean, float std) {
  Tensor t = empty(shape);
  for (float& v : t.span()) v = mean + std * gen.normal();
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, float lo, float hi) {
  Tensor t = empty(shape);
  for (float& v : t.span()) v = gen.uniform(lo, hi);
  return t;
}

const Shape& Tensor::shape() const { return checked(impl_).shape; }

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n)
    throw UsageError("dimension " + std::to_string(d) + " out of range for shape " +
                     shape_str(shape()));
  return shape()[static_cast<size_t>(d)];
}

int64_t Tensor::numel() const { return numel_of(shape()); }

float* Tensor::data() { return checked(impl_).storage->data(); }

// Reading through a const handle is not a write (no version bump).
const float* Tensor::data() const {
  const Storage& storage = *checked(impl_).storage;
  return storage.data();
}

float Tensor::item() const {
  if (numel() != 1) throw UsageError("item() on a tensor of shape " + shape_str(shape()));
  return data()[0];
}

float Tensor::at(int64_t i) const {
  if (i < 0 || i >= numel()) throw UsageError("flat index " + std::to_string(i));
  return data()[i];
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape());
  std::memcpy(t.data(), data(), sizeof(float) * static_cast<size_t>(numel()));
  return t;
}

Tensor Tensor::detach() const { return make_view(*this, shape()); }

void Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel())
    throw UsageError("copy_from: " + shape_str(src.shape()) + " into " + shape_str(shape()));
  std::memcpy(data(), src.data(), sizeof(float) * static_cast<size_t>(numel()));
}

void Tensor::fill_(float value) { std::fill_n(data(), numel(), value); }

ContentVersion Tensor::content_version() const { return checked(impl_).storage->version(); }

bool Tensor::shares_storage_with(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  checked(impl_).requires_grad = value;
  return *this;
}

const Tensor& Tensor::grad() const { return checked(impl_).grad; }

Tensor& Tensor::grad_or_zeros() {
  TensorImpl& impl = checked(impl_);
  if (!impl.grad.defined()) impl.grad = zeros(impl.shape);
  return impl.grad;
}

void Tensor::zero_grad() { checked(impl_).grad = Tensor(); }

void Tensor::set_grad(const Tensor& g) { checked(impl_).grad = g; }

const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked(impl_).grad_fn; }

void Tensor::set_grad_fn(std::shared_ptr<Node> node) { checked(impl_).grad_fn = std::move(node); }

std::string Tensor::to_string(int64_t max_values) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor" << shape_str(shape()) << " {";
  const int64_t n = std::min(numel(), max_values);
  for (int64_t i = 0; i < n; ++i) os << (i ? ", " : "") << data()[i];
  if (numel() > n) os << ", ...";
  os << '}';
  return os.str();
}

Tensor make_view(const Tensor& base, const Shape& shape) {
  if (numel_of(shape) != base.numel())
    throw UsageError("cannot view " + shape_str(base.shape()) + " as " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = checked(base.impl_).storage;
  return Tensor(std::move(impl));
}

}  // namespace spruce
