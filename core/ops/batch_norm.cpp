// Batch norm forward and backward, one channel at a time.
//
// x is viewed as [N, C, S] (S = H * W, or 1 for [N, C]); channel c holds
// M = N * S values. With x_hat = (x - mean) * invstd and upstream gradient g:
//   forward    y = gamma * x_hat + beta
//   backward   d beta  = sum g
//              d gamma = sum g * x_hat
//              d x     = gamma * invstd * (g - sum g / M - x_hat * sum(g * x_hat) / M)   (train)
//              d x     = gamma * invstd * g                                              (eval)
// The train-mode d x carries the two extra terms because mean and invstd are
// functions of x. Channels are independent, so both directions run in
// parallel over channels, and each channel is summed in one fixed order:
// the result does not depend on the thread count. Sums accumulate in double.
// The backward keeps only mean and invstd per channel and recomputes x_hat
// from x (already an input of the node): no activation-sized buffer is saved.
#include "core/ops/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk

/// Channels per parallel chunk so that a chunk holds about kGrain elements.
int64_t channel_grain(int64_t per_channel) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(per_channel, 1));
}

void check_channel_vector(const char* what, const Tensor& t, int64_t C) {
  if (t.defined() && (t.dim() != 1 || t.size(0) != C))
    throw std::invalid_argument(std::string("batch_norm: ") + what + " " + shape_str(t.shape()) +
                                " for " + std::to_string(C) + " channels, expected [" +
                                std::to_string(C) + "]");
}

/// s1 += sum (p[i] - shift), s2 += sum (p[i] - shift)^2 over n values.
/// Four independent double lanes break the add dependency chain; the order
/// is fixed, so the result is deterministic.
void add_shifted_moments(const float* p, int64_t n, double shift, double& s1, double& s2) {
  double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double d = static_cast<double>(p[i + k]) - shift;
      a[k] += d;
      b[k] += d * d;
    }
  for (; i < n; ++i) {
    const double d = static_cast<double>(p[i]) - shift;
    a[0] += d;
    b[0] += d * d;
  }
  s1 += (a[0] + a[1]) + (a[2] + a[3]);
  s2 += (b[0] + b[1]) + (b[2] + b[3]);
}

/// sg += sum g[i], sgx += sum g[i] * (x[i] - mean) over n values (same lanes).
void add_grad_moments(const float* g, const float* x, int64_t n, double mean, double& sg,
                      double& sgx) {
  double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double gk = g[i + k];
      a[k] += gk;
      b[k] += gk * (static_cast<double>(x[i + k]) - mean);
    }
  for (; i < n; ++i) {
    const double gk = g[i];
    a[0] += gk;
    b[0] += gk * (static_cast<double>(x[i]) - mean);
  }
  sg += (a[0] + a[1]) + (a[2] + a[3]);
  sgx += (b[0] + b[1]) + (b[2] + b[3]);
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, const BatchNormOptions& options) {
  if (x.dim() < 2)
    throw std::invalid_argument("batch_norm: input " + shape_str(x.shape()) +
                                ", expected [N, C, H, W] or [N, C]");
  const int64_t N = x.size(0), C = x.size(1);
  int64_t S = 1;  // spatial size: every dimension after C
  for (int64_t d = 2; d < x.dim(); ++d) S *= x.size(d);
  const int64_t M = N * S;  // values per channel
  check_channel_vector("weight", weight, C);
  check_channel_vector("bias", bias, C);
  check_channel_vector("running_mean", running_mean, C);
  check_channel_vector("running_var", running_var, C);
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument(
        "batch_norm: running_mean and running_var must both be given or both be absent");
  if (options.training && M <= 1)
    throw std::invalid_argument(
        "batch_norm: expected more than 1 value per channel in training, got input " +
        shape_str(x.shape()));
  if (!options.training && !running_mean.defined())
    throw std::invalid_argument("batch_norm: eval mode needs running_mean and running_var");

  // Per-channel statistics used by this call (batch or running), kept for the backward.
  std::vector<double> mean(static_cast<size_t>(C)), invstd(static_cast<size_t>(C));
  const float* px = x.data();
  const float* pw = weight.defined() ? weight.data() : nullptr;
  const float* pb = bias.defined() ? bias.data() : nullptr;
  float* rm = running_mean.defined() ? running_mean.data() : nullptr;
  float* rv = running_var.defined() ? running_var.data() : nullptr;
  Tensor out = Tensor::empty(x.shape());
  float* po = out.data();
  const bool training = options.training;
  const double eps = options.eps, momentum = options.momentum;

  parallel_for(0, C, channel_grain(M), [&](int64_t c_lo, int64_t c_hi) {
    for (int64_t c = c_lo; c < c_hi; ++c) {
      double mu, var;
      if (training) {
        // Shift by one sample of the channel so E[d^2] - E[d]^2 does not
        // cancel catastrophically when |mean| >> std.
        const double shift = px[c * S];
        double s1 = 0, s2 = 0;
        for (int64_t n = 0; n < N; ++n) add_shifted_moments(px + (n * C + c) * S, S, shift, s1, s2);
        const double m1 = s1 / static_cast<double>(M);
        mu = shift + m1;
        var = std::max(0.0, s2 / static_cast<double>(M) - m1 * m1);  // biased
        if (rm) {
          const double unbiased = var * static_cast<double>(M) / static_cast<double>(M - 1);
          rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mu);
          rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * unbiased);
        }
      } else {
        mu = rm[c];
        var = rv[c];
      }
      const double is = 1.0 / std::sqrt(var + eps);
      mean[static_cast<size_t>(c)] = mu;
      invstd[static_cast<size_t>(c)] = is;
      // y = (x - mean) * a + beta with a = gamma * invstd; subtracting the
      // mean first keeps precision when |mean| >> std.
      const float af = static_cast<float>((pw ? pw[c] : 1.0) * is);
      const float muf = static_cast<float>(mu);
      const float betaf = pb ? pb[c] : 0.f;
      for (int64_t n = 0; n < N; ++n) {
        const float* xi = px + (n * C + c) * S;
        float* yo = po + (n * C + c) * S;
        for (int64_t s = 0; s < S; ++s) yo[s] = (xi[s] - muf) * af + betaf;
      }
    }
  });

  record(out, "batch_norm", {x, weight, bias},
         [N, C, S, M, training, mean = std::move(mean), invstd = std::move(invstd)](
             const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           const bool need_x = in[0].requires_grad();
           float* dx = need_x ? in[0].grad_or_zeros().data() : nullptr;
           float* dw = in[1].requires_grad() ? in[1].grad_or_zeros().data() : nullptr;
           float* db = in[2].requires_grad() ? in[2].grad_or_zeros().data() : nullptr;
           const float* px = in[0].data();
           const float* pw = in[1].defined() ? in[1].data() : nullptr;
           const float* g = d_out.data();
           // The sums are needed for d weight, d bias and the train-mode d x.
           const bool need_sums = dw || db || (dx && training);
           parallel_for(0, C, channel_grain(M), [&](int64_t c_lo, int64_t c_hi) {
             for (int64_t c = c_lo; c < c_hi; ++c) {
               const double mu = mean[static_cast<size_t>(c)];
               const double is = invstd[static_cast<size_t>(c)];
               double sg = 0, sgx = 0;  // sum g, sum g * (x - mean)
               if (need_sums)
                 for (int64_t n = 0; n < N; ++n) {
                   const int64_t off = (n * C + c) * S;
                   add_grad_moments(g + off, px + off, S, mu, sg, sgx);
                 }
               if (db) db[c] += static_cast<float>(sg);
               if (dw) dw[c] += static_cast<float>(sgx * is);
               if (!dx) continue;
               const double k = (pw ? pw[c] : 1.0) * is;
               // d x = A g + B (x - mean) + K: the formula above with per-channel
               // constants A = gamma invstd, B = -A invstd^2 sum(g (x - mean)) / M,
               // K = -A sum(g) / M (B = K = 0 in eval mode).
               double B = 0, K = 0;
               if (training) {
                 const double inv_m = 1.0 / static_cast<double>(M);
                 B = -k * is * is * sgx * inv_m;
                 K = -k * sg * inv_m;
               }
               const float Af = static_cast<float>(k), Bf = static_cast<float>(B),
                           Kf = static_cast<float>(K), muf = static_cast<float>(mu);
               for (int64_t n = 0; n < N; ++n) {
                 const int64_t off = (n * C + c) * S;
                 for (int64_t s = 0; s < S; ++s)
                   dx[off + s] += Af * g[off + s] + Bf * (px[off + s] - muf) + Kf;
               }
             }
           });
         });
  return out;
}

}  // namespace spruce::ops
