// Batch norm forward and backward, one channel at a time, and its fusion
// with a following ReLU.
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
// parallel over channel ranges, and each channel is summed in one fixed order
// (sample by sample, then along the plane): the result does not depend on
// the thread count. Sums accumulate in double. The backward keeps only mean
// and invstd per channel and recomputes x_hat from x (already an input of the
// node): no activation-sized buffer is saved.
//
// Memory order: with big planes (S >= kLongPlane) a thread walks one channel
// at a time; with small ones (MobileNet's 2x2 and 4x4) it walks sample by
// sample across its whole channel range, which reads memory contiguously
// instead of S floats per cache-line visit and per call.
//
// BN + ReLU: relu() of a batch_norm output asks relu_of_batch_norm to fuse
// the two backwards. The fused node differentiates z = relu(bn(x)) directly
// from x and the ReLU mask (z > 0): the BN output y is no longer kept alive
// by the graph (one activation less per pair) and the separate ReLU backward
// pass, with its gradient buffer, disappears.
#include "core/ops/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops/grad_buffer.h"
#include "core/parallel.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;     // elements per parallel chunk
constexpr int64_t kLongPlane = 64;      // planes at least this long are walked per channel

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

/// Calls seg(c, offset) for every (n, c) plane of the channels [c0, c1), in
/// sample order for each channel; the planes of one channel are always
/// visited in the order n = 0, 1, ..., so per-channel sums do not depend on
/// the traversal below.
template <class Seg>
void for_planes(int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1, const Seg& seg) {
  if (S >= kLongPlane) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t n = 0; n < N; ++n) seg(c, (n * C + c) * S);
  } else {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = c0; c < c1; ++c) seg(c, (n * C + c) * S);
  }
}

/// s1 += sum (p[i] - shift), s2 += sum (p[i] - shift)^2 over n values.
/// Four independent double lanes break the add dependency chain; the order
/// is fixed, so the result is deterministic.
void add_shifted_moments(const float* __restrict p, int64_t n, double shift, double& s1,
                         double& s2) {
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

/// sg += sum g'[i], sgx += sum g'[i] * (x[i] - mean) over n values (same
/// lanes), where g' = g, or g masked by z > 0 when z is given (fused ReLU).
void add_grad_moments(const float* __restrict g, const float* __restrict x,
                      const float* __restrict z, int64_t n, double mean, double& sg, double& sgx) {
  double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
  int64_t i = 0;
  auto grad = [&](int64_t j) -> double { return z && !(z[j] > 0.f) ? 0.0 : g[j]; };
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double gk = grad(i + k);
      a[k] += gk;
      b[k] += gk * (static_cast<double>(x[i + k]) - mean);
    }
  for (; i < n; ++i) {
    const double gk = grad(i);
    a[0] += gk;
    b[0] += gk * (static_cast<double>(x[i]) - mean);
  }
  sg += (a[0] + a[1]) + (a[2] + a[3]);
  sgx += (b[0] + b[1]) + (b[2] + b[3]);
}

/// The backward of one batch_norm call, and what it keeps: sizes and the
/// per-channel statistics that call used (batch or running). A named type,
/// so that relu_of_batch_norm can recognise a batch_norm node and reuse it.
struct BatchNormBackward {
  int64_t N = 0, C = 0, S = 0, M = 0;
  bool training = true;
  std::vector<double> mean, invstd;  // [C]

  void operator()(const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) const {
    run(d_out, nullptr, in);
  }

  /// Adds the gradients of x, weight and bias for upstream gradient d_out,
  /// masked by z > 0 when z is given (the output of a fused ReLU).
  void run(const Tensor& d_out, const float* z, std::vector<Tensor>& in) const {
    bool fresh = false;
    float* dx = in[0].requires_grad() ? grad_for_write(in[0], fresh) : nullptr;
    float* dw = in[1].requires_grad() ? in[1].grad_or_zeros().data() : nullptr;
    float* db = in[2].requires_grad() ? in[2].grad_or_zeros().data() : nullptr;
    const float* px = in[0].data();
    const float* pw = in[1].defined() ? in[1].data() : nullptr;
    const float* g = d_out.data();
    // The sums are needed for d weight, d bias and the train-mode d x.
    const bool need_sums = dw || db || (dx && training);
    parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
      const size_t width = static_cast<size_t>(c1 - c0);
      std::vector<double> sg(width, 0.0), sgx(width, 0.0);  // sum g, sum g * (x - mean)
      if (need_sums)
        for_planes(N, C, S, c0, c1, [&](int64_t c, int64_t off) {
          add_grad_moments(g + off, px + off, z ? z + off : nullptr, S,
                           mean[static_cast<size_t>(c)], sg[c - c0], sgx[c - c0]);
        });
      // d x = A g' + B (x - mean) + K: the formula above with per-channel
      // constants A = gamma invstd, B = -A invstd^2 sum(g' (x - mean)) / M,
      // K = -A sum(g') / M (B = K = 0 in eval mode).
      std::vector<float> A(width), B(width), K(width), mu(width);
      for (int64_t c = c0; c < c1; ++c) {
        const size_t i = static_cast<size_t>(c - c0);
        const double is = invstd[static_cast<size_t>(c)];
        if (db) db[c] += static_cast<float>(sg[i]);
        if (dw) dw[c] += static_cast<float>(sgx[i] * is);
        const double k = (pw ? pw[c] : 1.0) * is;
        double b = 0, kk = 0;
        if (training) {
          const double inv_m = 1.0 / static_cast<double>(M);
          b = -k * is * is * sgx[i] * inv_m;
          kk = -k * sg[i] * inv_m;
        }
        A[i] = static_cast<float>(k), B[i] = static_cast<float>(b), K[i] = static_cast<float>(kk);
        mu[i] = static_cast<float>(mean[static_cast<size_t>(c)]);
      }
      if (!dx) return;
      for_planes(N, C, S, c0, c1, [&](int64_t c, int64_t off) {
        const size_t i = static_cast<size_t>(c - c0);
        const float a = A[i], b = B[i], k = K[i], m = mu[i];
        const float* __restrict gi = g + off;
        const float* __restrict xi = px + off;
        float* __restrict di = dx + off;
        if (z) {
          const float* __restrict zi = z + off;
          if (fresh) {
            for (int64_t s = 0; s < S; ++s)
              di[s] = a * (zi[s] > 0.f ? gi[s] : 0.f) + b * (xi[s] - m) + k;
          } else {
            for (int64_t s = 0; s < S; ++s)
              di[s] += a * (zi[s] > 0.f ? gi[s] : 0.f) + b * (xi[s] - m) + k;
          }
        } else if (fresh) {
          for (int64_t s = 0; s < S; ++s) di[s] = a * gi[s] + b * (xi[s] - m) + k;
        } else {
          for (int64_t s = 0; s < S; ++s) di[s] += a * gi[s] + b * (xi[s] - m) + k;
        }
      });
    });
  }
};

/// The node of relu(batch_norm(...)): the batch norm's backward with the
/// ReLU mask taken from the fused node's own output.
struct BatchNormReluBackward {
  BatchNormBackward bn;
  void operator()(const Tensor& out, const Tensor& d_out, std::vector<Tensor>& in) const {
    bn.run(d_out, out.data(), in);
  }
};
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
  BatchNormBackward saved;
  saved.N = N, saved.C = C, saved.S = S, saved.M = M, saved.training = options.training;
  saved.mean.resize(static_cast<size_t>(C));
  saved.invstd.resize(static_cast<size_t>(C));
  const float* px = x.data();
  const float* pw = weight.defined() ? weight.data() : nullptr;
  const float* pb = bias.defined() ? bias.data() : nullptr;
  float* rm = running_mean.defined() ? running_mean.data() : nullptr;
  float* rv = running_var.defined() ? running_var.data() : nullptr;
  Tensor out = Tensor::empty(x.shape());
  float* po = out.data();
  const bool training = options.training;
  const double eps = options.eps, momentum = options.momentum;

  parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
    const size_t width = static_cast<size_t>(c1 - c0);
    std::vector<double> s1(width, 0.0), s2(width, 0.0);
    if (training)
      // Shift by one sample of the channel so E[d^2] - E[d]^2 does not
      // cancel catastrophically when |mean| >> std.
      for_planes(N, C, S, c0, c1, [&](int64_t c, int64_t off) {
        add_shifted_moments(px + off, S, px[c * S], s1[c - c0], s2[c - c0]);
      });
    std::vector<float> A(width), Bf(width), mu(width);
    for (int64_t c = c0; c < c1; ++c) {
      const size_t i = static_cast<size_t>(c - c0);
      double m, var;
      if (training) {
        const double m1 = s1[i] / static_cast<double>(M);
        m = px[c * S] + m1;
        var = std::max(0.0, s2[i] / static_cast<double>(M) - m1 * m1);  // biased
        if (rm) {
          const double unbiased = var * static_cast<double>(M) / static_cast<double>(M - 1);
          rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * m);
          rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * unbiased);
        }
      } else {
        m = rm[c];
        var = rv[c];
      }
      const double is = 1.0 / std::sqrt(var + eps);
      saved.mean[static_cast<size_t>(c)] = m;
      saved.invstd[static_cast<size_t>(c)] = is;
      // y = (x - mean) * a + beta with a = gamma * invstd; subtracting the
      // mean first keeps precision when |mean| >> std.
      A[i] = static_cast<float>((pw ? pw[c] : 1.0) * is);
      mu[i] = static_cast<float>(m);
      Bf[i] = pb ? pb[c] : 0.f;
    }
    for_planes(N, C, S, c0, c1, [&](int64_t c, int64_t off) {
      const size_t i = static_cast<size_t>(c - c0);
      const float a = A[i], m = mu[i], b = Bf[i];
      const float* __restrict xi = px + off;
      float* __restrict yo = po + off;
      for (int64_t s = 0; s < S; ++s) yo[s] = (xi[s] - m) * a + b;
    });
  });

  record(out, "batch_norm", {x, weight, bias}, std::move(saved));
  return out;
}

Tensor relu_of_batch_norm(const Tensor& y) {
  if (!y.defined() || !grad_mode_enabled() || !y.grad_fn()) return Tensor();
  const std::shared_ptr<Node>& node = y.grad_fn();
  const BatchNormBackward* bn = node->backward.target<BatchNormBackward>();
  if (!bn) return Tensor();
  Tensor z = Tensor::empty(y.shape());
  const float* py = y.data();
  float* pz = z.data();
  parallel_for(0, z.numel(), kGrain, [=](int64_t lo, int64_t hi) {
    const float* __restrict a = py;
    float* __restrict o = pz;
    for (int64_t i = lo; i < hi; ++i) o[i] = a[i] > 0.f ? a[i] : 0.f;
  });
  record(z, "batch_norm_relu", node->inputs, BatchNormReluBackward{*bn});
  return z;
}

}  // namespace spruce::ops
