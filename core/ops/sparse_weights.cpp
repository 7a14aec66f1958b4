// Compression of weights into rows of nonzeros and the staleness check
// (see sparse_weights.h).
#include "sparse_weights.h"

#include <atomic>

#include "../error.h"

namespace spruce::ops {

namespace {
std::atomic<SparseMode> g_mode{SparseMode::kAuto};
}  // namespace

void set_sparse_mode(SparseMode mode) { g_mode.store(mode); }
SparseMode sparse_mode() { return g_mode.load(); }

double SparseRows::density() const {
  const int64_t total = rows * cols;
  return total == 0 ? 1.0 : static_cast<double>(nnz()) / static_cast<double>(total);
}

SparseRows compress_rows(const Tensor& weight, const Tensor& multiplier) {
  if (weight.dim() < 1) throw UsageError("compress_rows: weight must have a dimension");
  if (multiplier.defined() && multiplier.numel() != weight.numel())
    throw UsageError("compress_rows: multiplier " + shape_str(multiplier.shape()) + " for weight " +
                     shape_str(weight.shape()));
  SparseRows r;
  r.rows = weight.size(0);
  r.cols = r.rows == 0 ? 0 : weight.numel() / r.rows;
  const float* w = weight.data();
  const float* m = multiplier.defined() ? multiplier.data() : nullptr;
  r.start.assign(static_cast<size_t>(r.rows + 1), 0);
  for (int64_t i = 0; i < r.rows; ++i) {
    for (int64_t j = 0; j < r.cols; ++j) {
      const int64_t at = i * r.cols + j;
      const float v = m ? w[at] * m[at] : w[at];
      if (v != 0.f) {
        r.col.push_back(static_cast<int32_t>(j));
        r.value.push_back(v);
      }
    }
    r.start[static_cast<size_t>(i + 1)] = static_cast<int32_t>(r.value.size());
  }
  return r;
}

const SparseRows& SparseWeightCache::get(const Tensor& weight, const Tensor& multiplier) {
  const ContentVersion wv = weight.content_version();
  const ContentVersion mv = multiplier.defined() ? multiplier.content_version() : ContentVersion{};
  if (!valid_ || !(wv == weight_version_) || !(mv == multiplier_version_)) {
    rows_ = compress_rows(weight, multiplier);
    derived_ = Derived{};
    weight_version_ = wv, multiplier_version_ = mv;
    valid_ = true;
    ++compressions_;
  }
  return rows_;
}

bool SparseWeightCache::use_sparse(const Tensor& weight, const Tensor& multiplier,
                                   double max_density) {
  switch (sparse_mode()) {
    case SparseMode::kDense:
      return false;
    case SparseMode::kSparse:
      return true;
    case SparseMode::kAuto:
      break;
  }
  return get(weight, multiplier).density() <= max_density;
}

}  // namespace spruce::ops
