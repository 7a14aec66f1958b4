// Bucketed gradient averaging over ranks.
#include "data_parallel.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "../core/error.h"

namespace spruce::optim {

GradientAverager::GradientAverager(Communicator& comm, NamedTensors params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  if (bucket_bytes < 1)
    throw UsageError("GradientAverager: bucket of " + std::to_string(bucket_bytes) + " bytes");
  int64_t in_bucket = 0, largest = 0, bucket = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t bytes = params_[i].second.numel() * static_cast<int64_t>(sizeof(float));
    if (i == 0 || in_bucket + bytes > bucket_bytes) {
      bucket_start_.push_back(i);
      in_bucket = 0;
      bucket = 0;
    }
    in_bucket += bytes;
    bucket += params_[i].second.numel();
    largest = std::max(largest, bucket);
  }
  bucket_start_.push_back(params_.size());
  buffer_.resize(static_cast<size_t>(largest));
}

int64_t GradientAverager::bytes_per_step() const {
  int64_t n = 0;
  for (const auto& [name, p] : params_) n += p.numel();
  return n * static_cast<int64_t>(sizeof(float));
}

void GradientAverager::average(int64_t local, int64_t whole) {
  if (comm_.size() == 1) return;
  if (whole < 1 || local < 0 || local > whole)
    throw UsageError("GradientAverager: " + std::to_string(local) + " of " + std::to_string(whole) +
                     " samples");
  const auto t0 = std::chrono::steady_clock::now();
  const float scale = static_cast<float>(static_cast<double>(local) / static_cast<double>(whole));
  for (size_t b = 0; b + 1 < bucket_start_.size(); ++b) {
    float* out = buffer_.data();
    for (size_t i = bucket_start_[b]; i < bucket_start_[b + 1]; ++i) {
      Tensor& g = params_[i].second.grad_or_zeros();
      const float* pg = g.data();
      for (int64_t k = 0; k < g.numel(); ++k) *out++ = pg[k] * scale;
    }
    comm_.allreduce_sum(
        std::span<float>(buffer_.data(), static_cast<size_t>(out - buffer_.data())));
    const float* in = buffer_.data();
    for (size_t i = bucket_start_[b]; i < bucket_start_[b + 1]; ++i) {
      Tensor& g = params_[i].second.grad_or_zeros();
      std::copy_n(in, g.numel(), g.data());
      in += g.numel();
    }
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void average_over_ranks(Communicator& comm, const NamedTensors& tensors) {
  if (comm.size() == 1) return;
  std::vector<float> all;
  for (const auto& [name, t] : tensors) all.insert(all.end(), t.data(), t.data() + t.numel());
  comm.allreduce_sum(std::span<float>(all));
  // A division, not a product with 1/N: values equal on every rank come back unchanged.
  const float n = static_cast<float>(comm.size());
  const float* in = all.data();
  for (const auto& [name, t] : tensors) {
    Tensor handle = t;  // shares the storage
    float* out = handle.data();
    for (int64_t k = 0; k < t.numel(); ++k) out[k] = *in++ / n;
  }
}

}  // namespace spruce::optim
