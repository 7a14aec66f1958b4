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
// at a time, plane by plane. With small ones (MobileNet's 2x2 and 4x4) a
// plane is too short for a loop of its own: a thread walks sample by sample
// over its whole channel range, one contiguous row of width * S floats, with
// per-channel constants expanded to per-position arrays and per-position
// partial sums that are folded into channel sums at the end. Each channel's
// sum still runs in one fixed order (over samples, then positions), which
// the thread count does not change.
//
// BN + ReLU: relu() of a batch_norm output asks relu_of_batch_norm to fuse
// the two backwards. The fused node differentiates z = relu(bn(x)) directly
// from x and the ReLU mask (z > 0): the BN output y is no longer kept alive
// by the graph (one activation less per pair) and the separate ReLU backward
// pass, with its gradient buffer, disappears.
//
// One file over ~500 lines on purpose: the forward, the backward and the fused
// BN + ReLU backward share the per-channel walks and vector-lane sums below,
// kept in one translation unit so that they inline into every loop.
#include "batch_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "batch_norm_sync.h"
#include "grad_buffer.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk
constexpr int64_t kLongPlane = 64;   // planes at least this long are walked per channel

/// Channels per parallel chunk so that a chunk holds about kGrain elements.
int64_t channel_grain(int64_t per_channel) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(per_channel, 1));
}

void check_channel_vector(const char* what, const Tensor& t, int64_t C) {
  if (t.defined() && (t.dim() != 1 || t.size(0) != C))
    throw UsageError(std::string("batch_norm: ") + what + " " + shape_str(t.shape()) + " for " +
                     std::to_string(C) + " channels, expected [" + std::to_string(C) + "]");
}

/// Per-channel values repeated S times: channel c of [c0, c0 + width) fills
/// positions [(c - c0) S, (c - c0 + 1) S) of a small-plane row.
template <class T>
std::vector<T> expand(const std::vector<T>& per_channel, int64_t S) {
  std::vector<T> out(per_channel.size() * static_cast<size_t>(S));
  for (size_t i = 0; i < out.size(); ++i) out[i] = per_channel[i / static_cast<size_t>(S)];
  return out;
}

/// Folds per-position sums of a small-plane row into per-channel sums.
void fold(const std::vector<double>& per_position, int64_t S, std::vector<double>& per_channel) {
  for (size_t i = 0; i < per_position.size(); ++i)
    per_channel[i / static_cast<size_t>(S)] += per_position[i];
}

// Four doubles as one value (GCC/Clang vector extension): g++ does not
// vectorise the float-to-double sums below on its own.
using Vec4d = double __attribute__((vector_size(32)));
using Vec4f = float __attribute__((vector_size(16)));

inline Vec4d load4(const float* p) {
  Vec4f v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, Vec4d);
}

inline double lanes_sum(Vec4d v) { return (v[0] + v[1]) + (v[2] + v[3]); }

/// s1 += sum (p[i] - shift), s2 += sum (p[i] - shift)^2 over n values, in
/// two vectors of four double lanes; the order is fixed, so the result is
/// deterministic.
void add_shifted_moments(const float* __restrict p, int64_t n, double shift, double& s1,
                         double& s2) {
  Vec4d a0 = {}, a1 = {}, b0 = {}, b1 = {};
  const Vec4d sh = {shift, shift, shift, shift};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const Vec4d d0 = load4(p + i) - sh, d1 = load4(p + i + 4) - sh;
    a0 += d0, a1 += d1;
    b0 += d0 * d0, b1 += d1 * d1;
  }
  double ta = 0, tb = 0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(p[i]) - shift;
    ta += d;
    tb += d * d;
  }
  s1 += lanes_sum(a0 + a1) + ta;
  s2 += lanes_sum(b0 + b1) + tb;
}

/// shift[c], s1[c], s2[c] for the channels [c0, c1) (arrays indexed from
/// c0): shift = the channel's first value, s1 = sum (x - shift), s2 = sum
/// (x - shift)^2. Shifting by one sample of the channel keeps E[d^2] - E[d]^2
/// from cancelling catastrophically when |mean| >> std.
void shifted_moments(const float* px, int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1,
                     double* shift, double* s1, double* s2) {
  const size_t width = static_cast<size_t>(c1 - c0);
  for (int64_t c = c0; c < c1; ++c) shift[c - c0] = px[c * S];
  if (S >= kLongPlane) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t n = 0; n < N; ++n)
        add_shifted_moments(px + (n * C + c) * S, S, shift[c - c0], s1[c - c0], s2[c - c0]);
    return;
  }
  const std::vector<double> sh = expand(std::vector<double>(shift, shift + width), S);
  const int64_t L = static_cast<int64_t>(sh.size());
  std::vector<double> a(sh.size(), 0.0), b(sh.size(), 0.0);
  double* __restrict pa = a.data();
  double* __restrict pb = b.data();
  const double* __restrict ps = sh.data();
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict xr = px + (n * C + c0) * S;
    for (int64_t j = 0; j < L; ++j) {
      const double d = static_cast<double>(xr[j]) - ps[j];
      pa[j] += d;
      pb[j] += d * d;
    }
  }
  std::vector<double> f1(width, 0.0), f2(width, 0.0);
  fold(a, S, f1);
  fold(b, S, f2);
  for (size_t i = 0; i < width; ++i) s1[i] += f1[i], s2[i] += f2[i];
}

/// The upstream gradient as batch norm sees it: g, or g where z > 0 when a
/// ReLU is fused (Masked). A select, so the loops vectorise.
template <bool Masked>
inline float grad_in(const float* __restrict g, const float* __restrict z, int64_t j) {
  if constexpr (Masked) return z[j] > 0.f ? g[j] : 0.f;
  return g[j];
}

/// Four consecutive g' values (see grad_in) as doubles.
template <bool Masked>
inline Vec4d grad4(const float* __restrict g, const float* __restrict z, int64_t j) {
  Vec4f v;
  std::memcpy(&v, g + j, sizeof v);
  if constexpr (Masked) {
    Vec4f m;
    std::memcpy(&m, z + j, sizeof m);
    v = m > 0.f ? v : Vec4f{};
  }
  return __builtin_convertvector(v, Vec4d);
}

/// sg += sum g'[i], sgx += sum g'[i] * (x[i] - mean) over n values (same lanes).
template <bool Masked>
void add_grad_moments(const float* __restrict g, const float* __restrict x,
                      const float* __restrict z, int64_t n, double mean, double& sg, double& sgx) {
  Vec4d a0 = {}, a1 = {}, b0 = {}, b1 = {};
  const Vec4d mu = {mean, mean, mean, mean};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const Vec4d g0 = grad4<Masked>(g, z, i), g1 = grad4<Masked>(g, z, i + 4);
    a0 += g0, a1 += g1;
    b0 += g0 * (load4(x + i) - mu), b1 += g1 * (load4(x + i + 4) - mu);
  }
  double ta = 0, tb = 0;
  for (; i < n; ++i) {
    const double gk = grad_in<Masked>(g, z, i);
    ta += gk;
    tb += gk * (static_cast<double>(x[i]) - mean);
  }
  sg += lanes_sum(a0 + a1) + ta;
  sgx += lanes_sum(b0 + b1) + tb;
}

/// Per-channel sums of g' and g' (x - mean) for the channels [c0, c1).
template <bool Masked>
void grad_sums(const float* g, const float* x, const float* z, const std::vector<double>& mean,
               int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1, std::vector<double>& sg,
               std::vector<double>& sgx) {
  if (S >= kLongPlane) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t off = (n * C + c) * S;
        add_grad_moments<Masked>(g + off, x + off, Masked ? z + off : nullptr, S,
                                 mean[static_cast<size_t>(c)], sg[c - c0], sgx[c - c0]);
      }
    return;
  }
  const std::vector<double> mu =
      expand(std::vector<double>(mean.begin() + c0, mean.begin() + c1), S);
  const int64_t L = (c1 - c0) * S;
  std::vector<double> a(static_cast<size_t>(L), 0.0), b(static_cast<size_t>(L), 0.0);
  double* __restrict pa = a.data();
  double* __restrict pb = b.data();
  const double* __restrict pm = mu.data();
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = (n * C + c0) * S;
    const float* __restrict gr = g + off;
    const float* __restrict xr = x + off;
    const float* __restrict zr = Masked ? z + off : nullptr;
    int64_t j = 0;
    for (; j + 4 <= L; j += 4) {
      Vec4d va, vb, vm;
      std::memcpy(&va, pa + j, sizeof va);
      std::memcpy(&vb, pb + j, sizeof vb);
      std::memcpy(&vm, pm + j, sizeof vm);
      const Vec4d gj = grad4<Masked>(gr, zr, j);
      va += gj;
      vb += gj * (load4(xr + j) - vm);
      std::memcpy(pa + j, &va, sizeof va);
      std::memcpy(pb + j, &vb, sizeof vb);
    }
    for (; j < L; ++j) {
      const double gj = grad_in<Masked>(gr, zr, j);
      pa[j] += gj;
      pb[j] += gj * (static_cast<double>(xr[j]) - pm[j]);
    }
  }
  fold(a, S, sg);
  fold(b, S, sgx);
}

/// dx (+)= A g' + B (x - mean) + K per channel, for the channels [c0, c1).
template <bool Masked>
void grad_input(const float* g, const float* x, const float* z, int64_t N, int64_t C, int64_t S,
                int64_t c0, const std::vector<float>& A, const std::vector<float>& B,
                const std::vector<float>& K, const std::vector<float>& mu, bool fresh, float* dx) {
  // One row: len floats from offset off with constants a, b, k, m (scalars
  // per channel, or per-position arrays for small planes: stride 1 or 0).
  auto row = [&](int64_t off, int64_t len, const float* a, const float* b, const float* k,
                 const float* m, int64_t step) {
    const float* __restrict gi = g + off;
    const float* __restrict xi = x + off;
    const float* __restrict zi = Masked ? z + off : nullptr;
    float* __restrict di = dx + off;
    if (step == 0) {
      const float av = *a, bv = *b, kv = *k, mv = *m;
      if (fresh)
        for (int64_t j = 0; j < len; ++j)
          di[j] = av * grad_in<Masked>(gi, zi, j) + bv * (xi[j] - mv) + kv;
      else
        for (int64_t j = 0; j < len; ++j)
          di[j] += av * grad_in<Masked>(gi, zi, j) + bv * (xi[j] - mv) + kv;
      return;
    }
    const float* __restrict av = a;
    const float* __restrict bv = b;
    const float* __restrict kv = k;
    const float* __restrict mv = m;
    if (fresh)
      for (int64_t j = 0; j < len; ++j)
        di[j] = av[j] * grad_in<Masked>(gi, zi, j) + bv[j] * (xi[j] - mv[j]) + kv[j];
    else
      for (int64_t j = 0; j < len; ++j)
        di[j] += av[j] * grad_in<Masked>(gi, zi, j) + bv[j] * (xi[j] - mv[j]) + kv[j];
  };
  const int64_t width = static_cast<int64_t>(A.size());
  if (S >= kLongPlane) {
    for (int64_t i = 0; i < width; ++i)
      for (int64_t n = 0; n < N; ++n) row((n * C + c0 + i) * S, S, &A[i], &B[i], &K[i], &mu[i], 0);
    return;
  }
  const auto Ae = expand(A, S), Be = expand(B, S), Ke = expand(K, S), Me = expand(mu, S);
  for (int64_t n = 0; n < N; ++n)
    row((n * C + c0) * S, width * S, Ae.data(), Be.data(), Ke.data(), Me.data(), 1);
}

/// The backward of one batch_norm call, and what it keeps: sizes and the
/// per-channel statistics that call used (batch or running). A named type,
/// so that relu_of_batch_norm can recognise a batch_norm node and reuse it.
struct BatchNormBackward {
  int64_t N = 0, C = 0, S = 0, M = 0;
  bool training = true;
  std::vector<double> mean, invstd;  // [C]
  int64_t M_stat = 0;    // values behind the statistics: M, or all ranks' when synchronized
  BatchNormSync sync{};  // comm == nullptr: not synchronized

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
    auto sums = [&](int64_t c0, int64_t c1, std::vector<double>& sg, std::vector<double>& sgx) {
      if (z)
        grad_sums<true>(g, px, z, mean, N, C, S, c0, c1, sg, sgx);
      else
        grad_sums<false>(g, px, z, mean, N, C, S, c0, c1, sg, sgx);
    };
    // Synchronized: this rank's sums of every channel first, then d x's
    // sums over all ranks (an allreduce between the two passes). d weight
    // and d bias keep this rank's sums: the gradient exchange adds them up.
    std::vector<double> local_sg, local_sgx, global_sg, global_sgx;
    const bool synced = sync.comm != nullptr && need_sums;
    if (synced) {
      local_sg.assign(static_cast<size_t>(C), 0.0);
      local_sgx.assign(static_cast<size_t>(C), 0.0);
      parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
        std::vector<double> sg(static_cast<size_t>(c1 - c0), 0.0), sgx(sg.size(), 0.0);
        sums(c0, c1, sg, sgx);
        std::copy(sg.begin(), sg.end(), local_sg.begin() + c0);
        std::copy(sgx.begin(), sgx.end(), local_sgx.begin() + c0);
      });
      global_sg = local_sg;
      global_sgx = local_sgx;
      sync_grad_sums(sync, global_sg, global_sgx);
    }
    parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
      const size_t width = static_cast<size_t>(c1 - c0);
      std::vector<double> sg(width, 0.0), sgx(width, 0.0);  // sum g', sum g' (x - mean)
      if (synced) {
        std::copy_n(local_sg.begin() + c0, width, sg.begin());
        std::copy_n(local_sgx.begin() + c0, width, sgx.begin());
      } else if (need_sums) {
        sums(c0, c1, sg, sgx);
      }
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
          const double inv_m = 1.0 / static_cast<double>(M_stat);
          b = -k * is * is * (synced ? global_sgx[static_cast<size_t>(c)] : sgx[i]) * inv_m;
          kk = -k * (synced ? global_sg[static_cast<size_t>(c)] : sg[i]) * inv_m;
        }
        A[i] = static_cast<float>(k), B[i] = static_cast<float>(b), K[i] = static_cast<float>(kk);
        mu[i] = static_cast<float>(mean[static_cast<size_t>(c)]);
      }
      if (!dx) return;
      if (z)
        grad_input<true>(g, px, z, N, C, S, c0, A, B, K, mu, fresh, dx);
      else
        grad_input<false>(g, px, z, N, C, S, c0, A, B, K, mu, fresh, dx);
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
    throw UsageError("batch_norm: input " + shape_str(x.shape()) +
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
    throw UsageError(
        "batch_norm: running_mean and running_var must both be given or both be absent");
  if (options.training && M <= 1)
    throw UsageError("batch_norm: expected more than 1 value per channel in training, got input " +
                     shape_str(x.shape()));
  if (!options.training && !running_mean.defined())
    throw UsageError("batch_norm: eval mode needs running_mean and running_var");

  // Per-channel statistics used by this call (batch or running), kept for the backward.
  BatchNormBackward saved;
  saved.N = N, saved.C = C, saved.S = S, saved.M = M, saved.M_stat = M,
  saved.training = options.training;
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

  const BatchNormSync* sync = training ? active_batch_norm_sync() : nullptr;
  // Synchronized: every channel's moments first, then the global statistics
  // (an allreduce between the two passes), then the output from those.
  std::vector<double> global_mean, global_var;
  int64_t M_stat = M;  // values behind the batch statistics
  if (sync) {
    std::vector<double> shift(static_cast<size_t>(C)), s1(static_cast<size_t>(C), 0.0),
        s2(static_cast<size_t>(C), 0.0);
    parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
      shifted_moments(px, N, C, S, c0, c1, shift.data() + c0, s1.data() + c0, s2.data() + c0);
    });
    M_stat = sync_moments(*sync, M, shift, s1, s2, global_mean, global_var);
    saved.M_stat = M_stat;
    saved.sync = *sync;
  }

  parallel_for(0, C, channel_grain(M), [&](int64_t c0, int64_t c1) {
    const size_t width = static_cast<size_t>(c1 - c0);
    std::vector<double> s1(width, 0.0), s2(width, 0.0), shift(width);
    if (training && !sync) shifted_moments(px, N, C, S, c0, c1, shift.data(), s1.data(), s2.data());
    std::vector<float> A(width), Bf(width), mu(width);
    for (int64_t c = c0; c < c1; ++c) {
      const size_t i = static_cast<size_t>(c - c0);
      double m, var;
      if (training) {
        if (sync) {
          m = global_mean[static_cast<size_t>(c)];
          var = global_var[static_cast<size_t>(c)];
        } else {
          const double m1 = s1[i] / static_cast<double>(M);
          m = shift[i] + m1;
          var = std::max(0.0, s2[i] / static_cast<double>(M) - m1 * m1);  // biased
        }
        if (rm) {
          const double unbiased =
              var * static_cast<double>(M_stat) / static_cast<double>(M_stat - 1);
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
    if (S >= kLongPlane) {
      for (int64_t c = c0; c < c1; ++c) {
        const size_t i = static_cast<size_t>(c - c0);
        const float a = A[i], m = mu[i], b = Bf[i];
        for (int64_t n = 0; n < N; ++n) {
          const float* __restrict xi = px + (n * C + c) * S;
          float* __restrict yo = po + (n * C + c) * S;
          for (int64_t s = 0; s < S; ++s) yo[s] = (xi[s] - m) * a + b;
        }
      }
    } else {
      const auto Ae = expand(A, S), Me = expand(mu, S), Be = expand(Bf, S);
      const int64_t L = static_cast<int64_t>(Ae.size());
      const float* __restrict av = Ae.data();
      const float* __restrict mv = Me.data();
      const float* __restrict bv = Be.data();
      for (int64_t n = 0; n < N; ++n) {
        const float* __restrict xr = px + (n * C + c0) * S;
        float* __restrict yr = po + (n * C + c0) * S;
        for (int64_t j = 0; j < L; ++j) yr[j] = (xr[j] - mv[j]) * av[j] + bv[j];
      }
    }
  });

  record(out, "batch_norm", {x, weight, bias}, std::move(saved));
  return out;
}

ChannelAffine batch_norm_eval_affine(const Tensor& weight, const Tensor& bias,
                                     const Tensor& running_mean, const Tensor& running_var,
                                     float eps) {
  if (!running_mean.defined() || !running_var.defined() || running_mean.dim() != 1)
    throw UsageError("batch_norm_eval_affine: needs running_mean and running_var [C]");
  const int64_t C = running_mean.size(0);
  check_channel_vector("weight", weight, C);
  check_channel_vector("bias", bias, C);
  check_channel_vector("running_var", running_var, C);
  ChannelAffine a{Tensor::empty({C}), Tensor::empty({C})};
  const float* pw = weight.defined() ? weight.data() : nullptr;
  const float* pb = bias.defined() ? bias.data() : nullptr;
  const float* rm = running_mean.data();
  const float* rv = running_var.data();
  float* scale = a.scale.data();  // one write each (a version bump per data() call)
  float* shift = a.shift.data();
  for (int64_t c = 0; c < C; ++c) {
    // As batch_norm's eval branch: invstd in double from the float variance.
    const double k = (pw ? pw[c] : 1.0) / std::sqrt(static_cast<double>(rv[c]) + eps);
    scale[c] = static_cast<float>(k);
    shift[c] = static_cast<float>((pb ? pb[c] : 0.0) - rm[c] * k);
  }
  return a;
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
