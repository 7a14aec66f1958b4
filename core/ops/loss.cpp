// Cross-entropy with a fused log-softmax: log p = z - max - log(sum exp(z - max)).
#include "loss.h"

#include <cmath>
#include <vector>

#include "../autograd.h"
#include "../error.h"

namespace spruce::ops {

Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels) {
  if (logits.dim() != 2)
    throw UsageError("cross_entropy: logits must be [N, C], got " + shape_str(logits.shape()));
  const int64_t N = logits.size(0), C = logits.size(1);
  if (static_cast<int64_t>(labels.size()) != N)
    throw UsageError("cross_entropy: " + std::to_string(labels.size()) + " labels for " +
                     std::to_string(N) + " rows");
  if (N == 0) throw UsageError("cross_entropy: empty batch");
  // Softmax probabilities are kept for the backward: d z = (p - onehot) / N.
  auto probs = std::make_shared<std::vector<float>>(static_cast<size_t>(N * C));
  std::vector<int32_t> y(labels.begin(), labels.end());
  double total = 0.0;
  const float* z = logits.data();
  for (int64_t n = 0; n < N; ++n) {
    if (y[n] < 0 || y[n] >= C)
      throw UsageError("cross_entropy: label " + std::to_string(y[n]) + " outside [0, " +
                       std::to_string(C) + ")");
    const float* row = z + n * C;
    float mx = row[0];
    for (int64_t c = 1; c < C; ++c) mx = std::max(mx, row[c]);
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(row[c] - mx));
    const double log_s = std::log(s);
    for (int64_t c = 0; c < C; ++c)
      (*probs)[n * C + c] = static_cast<float>(std::exp(static_cast<double>(row[c] - mx) - log_s));
    total += log_s - static_cast<double>(row[y[n]] - mx);
  }
  Tensor out = Tensor::full({}, static_cast<float>(total / static_cast<double>(N)));
  record(
      out, "cross_entropy", {logits},
      [probs, y = std::move(y), N, C](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
        const float g = d_out.item() / static_cast<float>(N);
        float* d = in[0].grad_or_zeros().data();
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t c = 0; c < C; ++c) d[n * C + c] += g * (*probs)[n * C + c];
          d[n * C + y[n]] -= g;
        }
      });
  return out;
}

int64_t count_correct(const Tensor& logits, std::span<const int32_t> labels) {
  const int64_t N = logits.size(0), C = logits.size(1);
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits.data() + n * C;
    int64_t best = 0;
    for (int64_t c = 1; c < C; ++c)
      if (row[c] > row[best]) best = c;
    if (best == labels[n]) ++correct;
  }
  return correct;
}

}  // namespace spruce::ops
