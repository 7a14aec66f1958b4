// Batch norm forward and backward, one channel at a time, fused with what
// follows it in a block: + residual, then ReLU.
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
// the thread count. Sums run in float vector lanes over short runs (a plane)
// and accumulate in double; the moments are shifted by a value of the
// channel, one pass. The backward keeps only mean and invstd
// per channel and recomputes x_hat from x (already an input of the node): no
// activation-sized buffer is saved.
//
// The passes are bound by memory, not arithmetic (ResNet-20's activations
// are megabytes): the code saves passes and streams. A thread takes its
// channels in blocks of ~kGrain values (one channel of a large plane) and
// runs both passes of a direction on a block before the next (moments then
// output, sums then d x), so the second pass rereads the block from L2.
//
// Memory order: with big planes (S >= kLongPlane) a thread walks one channel
// at a time, plane by plane. With small ones (MobileNet's 2x2 and 4x4) a
// plane is too short for a loop of its own: a thread walks sample by sample
// over its block, one contiguous row of width * S floats, with per-channel
// constants expanded to per-position arrays and per-position partial sums
// that are folded into channel sums at the end. Each channel's sum still
// runs in one fixed order (over samples, then positions), which neither the
// thread count nor the blocks change.
//
// Tails: batch_norm(x, ..., {.residual = r, .relu = true}) writes relu(y + r)
// in the output pass (add and relu as separate ops cost a pass each way and
// two gradient buffers), and relu() of a plain batch_norm output asks
// relu_of_batch_norm to fuse the backwards the same way. The node then
// differentiates from x and the ReLU mask: the sums pass hands g' (g masked)
// to the residual's gradient on the way, and d x reads g' back from there.
// Without a residual, on long planes, the mask is recomputed from x exactly
// as the forward computed the output, so the backward does not read the
// output at all. Values and gradients are bit for bit the plain ops'.
//
// One file over ~500 lines on purpose: the forward, the backward and the
// fused tails share the per-channel walks and vector-lane sums below, kept
// in one translation unit so that they inline into every loop.
#include "batch_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "batch_norm_sync.h"
#include "elementwise.h"
#include "grad_buffer.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk
constexpr int64_t kLongPlane = 64;   // planes at least this long are walked per channel

/// Channels per parallel chunk so that a chunk holds about kGrain elements.
int64_t channel_grain(int64_t per_channel) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(per_channel, 1));
}

/// parallel_for over the channels, each thread's range walked in blocks of
/// channel_grain channels (one channel of a large plane): both passes over a
/// block (moments then output, sums then d x) run before the next block, so
/// the second pass finds the block's planes still in L2 instead of sweeping
/// the whole tensor again.
template <class F>
void channel_blocks(int64_t C, int64_t M, const F& body) {
  const int64_t block = channel_grain(M);
  parallel_for(0, C, block, [&](int64_t c0, int64_t c1) {
    for (int64_t b = c0; b < c1; b += block) body(b, std::min(c1, b + block));
  });
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
void fold(const std::vector<double>& per_position, int64_t S, double* per_channel) {
  for (size_t i = 0; i < per_position.size(); ++i)
    per_channel[i / static_cast<size_t>(S)] += per_position[i];
}

// Eight floats as one value (GCC/Clang vector extension): one AVX2 register,
// half an AVX-512 one, two SSE2 ones.
using Vec8f = float __attribute__((vector_size(32)));

/// A float or a vector of floats from p (no alignment needed).
template <class V>
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline double lanes_sum(Vec8f v) {
  double s = 0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

// The sums below add floats in float vector lanes over a short run (one
// plane, or kFoldEvery samples of a small-plane row) and fold each run into
// double: a run of a few hundred values costs a float rounding of about
// 1e-6 relative, and the channel's total over the whole batch is exact to
// double's. Summing every value in double instead (convert, then add at half
// the width) made these passes bound by arithmetic, twice as slow as the
// passes around them (measured on AVX2).

/// Two running sums (s, t) over the values of one channel, plane after
/// plane, in a fixed order: each plane's first multiple of 8 values in two
/// pairs of float lanes, folded into double at the end of the plane, then one
/// double per value left. Same order whatever the thread count.
struct LaneSums {
  double s = 0, t = 0;

  /// Adds term8(j) = {s, t} for the values j..j+7 and term1(j) for single
  /// values over one plane of n values.
  template <class Term8, class Term1>
  void add_plane(int64_t n, Term8 term8, Term1 term1) {
    Vec8f s0{}, s1{}, t0{}, t1{};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const auto [a0, b0] = term8(j);
      const auto [a1, b1] = term8(j + 8);
      s0 += a0, s1 += a1, t0 += b0, t1 += b1;
    }
    if (j + 8 <= n) {
      const auto [a, b] = term8(j);
      s0 += a, t0 += b;
      j += 8;
    }
    double ps = lanes_sum(s0 + s1), pt = lanes_sum(t0 + t1);
    for (; j < n; ++j) {
      const auto [a, b] = term1(j);
      ps += a, pt += b;
    }
    s += ps, t += pt;
  }
};

/// Per-position sums (s, t) over the samples of small-plane rows (positions
/// [0, L) of each row): float partials over kFoldEvery rows at a time, folded
/// into double. Each position is summed over the rows in order.
class PositionSums {
 public:
  static constexpr int kFoldEvery = 16;

  explicit PositionSums(int64_t L)
      : s_(static_cast<size_t>(L)), t_(s_.size()), fs_(s_.size()), ft_(s_.size()) {}

  /// Adds one row: term8(j) = {s, t} for positions j..j+7, term1(j) for one.
  template <class Term8, class Term1>
  void add_row(Term8 term8, Term1 term1) {
    const int64_t L = static_cast<int64_t>(s_.size());
    float* __restrict ps = fs_.data();
    float* __restrict pt = ft_.data();
    int64_t j = 0;
    for (; j + 8 <= L; j += 8) {
      const auto [a, b] = term8(j);
      const Vec8f va = load<Vec8f>(ps + j) + a, vb = load<Vec8f>(pt + j) + b;
      std::memcpy(ps + j, &va, sizeof va);
      std::memcpy(pt + j, &vb, sizeof vb);
    }
    for (; j < L; ++j) {
      const auto [a, b] = term1(j);
      ps[j] += a, pt[j] += b;
    }
    if (++rows_ == kFoldEvery) flush();
  }

  /// Adds the sums of each channel (S positions each) to s_out[c], t_out[c].
  void fold_into(int64_t S, double* s_out, double* t_out) {
    flush();
    fold(s_, S, s_out);
    fold(t_, S, t_out);
  }

 private:
  void flush() {
    for (size_t j = 0; j < s_.size(); ++j) s_[j] += fs_[j], t_[j] += ft_[j], fs_[j] = ft_[j] = 0;
    rows_ = 0;
  }

  std::vector<double> s_, t_;
  std::vector<float> fs_, ft_;
  int rows_ = 0;
};

/// shift[c], s1[c], s2[c] for the channels [c0, c1) (arrays indexed from
/// c0): shift = the channel's first value, s1 = sum (x - shift), s2 = sum
/// (x - shift)^2. Shifting by one sample of the channel keeps E[d^2] - E[d]^2
/// from cancelling catastrophically when |mean| >> std.
void shifted_moments(const float* px, int64_t N, int64_t C, int64_t S, int64_t c0, int64_t c1,
                     double* shift, double* s1, double* s2) {
  const size_t width = static_cast<size_t>(c1 - c0);
  for (int64_t c = c0; c < c1; ++c) shift[c - c0] = px[c * S];
  if (S >= kLongPlane) {
    for (int64_t c = c0; c < c1; ++c) {
      const float sh = px[c * S];
      LaneSums acc;
      for (int64_t n = 0; n < N; ++n) {
        const float* __restrict p = px + (n * C + c) * S;
        acc.add_plane(
            S,
            [&](int64_t j) {
              const Vec8f d = load<Vec8f>(p + j) - sh;
              return std::pair{d, d * d};
            },
            [&](int64_t j) {
              const double d = static_cast<double>(p[j]) - sh;
              return std::pair{d, d * d};
            });
      }
      s1[c - c0] += acc.s, s2[c - c0] += acc.t;
    }
    return;
  }
  std::vector<float> shift_f(width);
  for (size_t i = 0; i < width; ++i) shift_f[i] = static_cast<float>(shift[i]);
  const std::vector<float> she = expand(shift_f, S);
  const float* __restrict ps = she.data();
  PositionSums acc(static_cast<int64_t>(she.size()));
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict xr = px + (n * C + c0) * S;
    acc.add_row(
        [&](int64_t j) {
          const Vec8f d = load<Vec8f>(xr + j) - load<Vec8f>(ps + j);
          return std::pair{d, d * d};
        },
        [&](int64_t j) {
          const float d = xr[j] - ps[j];
          return std::pair{d, d * d};
        });
  }
  acc.fold_into(S, s1, s2);
}

/// shift, s1, s2 as shifted_moments() gives them, for the channels [c0, c1),
/// from a conv's per-sample sums (channel_sums.h) instead of a pass over the
/// values: the center as the shift, the samples' sums added in order. False
/// (and s1, s2 zero) when a channel's mean lies more than 2 standard
/// deviations from its center: E[d^2] - E[d]^2 would then cancel more than
/// a factor 5 of the float sums' precision, and the caller sums the values
/// itself about one of them (0.16 % of the channels' statistics, counted over
/// 30 steps of `spruce-train --init` the committed dense ResNet-20 B, center 0).
bool moments_from_sums(const ChannelSums& cs, int64_t N, int64_t C, int64_t M, int64_t c0,
                       int64_t c1, double* shift, double* s1, double* s2) {
  bool close = true;
  for (int64_t c = c0; c < c1; ++c) {
    const size_t i = static_cast<size_t>(c - c0);
    shift[i] = cs.center[static_cast<size_t>(c)];
    double a = 0, b = 0;
    for (int64_t n = 0; n < N; ++n)
      a += cs.s1[static_cast<size_t>(n * C + c)], b += cs.s2[static_cast<size_t>(n * C + c)];
    s1[i] = a, s2[i] = b;
    const double m1 = a / static_cast<double>(M), var = b / static_cast<double>(M) - m1 * m1;
    if (m1 * m1 > 4 * std::max(var, 0.0)) close = false;
  }
  if (!close) std::fill(s1, s1 + (c1 - c0), 0.0), std::fill(s2, s2 + (c1 - c0), 0.0);
  return close;
}

/// What the backward's sums pass does with g' besides summing it: nothing,
/// or write it as the residual's gradient (assigned into a fresh one, added
/// into one that another consumer already wrote).
enum class ResidualGrad { kNone, kAssign, kAdd };

/// Where the ReLU mask of a fused node comes from: no ReLU; the node's
/// output (z > 0); or the input, recomputed as the forward computed the
/// output, (x - m) a + b > 0 with its float constants, so the backward does
/// not read z at all (batch norm + ReLU without a residual, long planes: the
/// small-plane loops read z).
enum class Mask { kNone, kOutput, kInput };

/// The forward's float constants of one channel, y = (x - m) a + b.
struct Affine {
  float a = 1, m = 0, b = 0;
};

/// g' at j: g, or g where the ReLU passed (see Mask), for one value (V =
/// float) or a vector of them. A select, so the loops vectorise.
template <Mask K, class V>
inline V grad_at(const float* __restrict g, const float* __restrict z, const float* __restrict x,
                 int64_t j, Affine f) {
  const V gj = load<V>(g + j);
  if constexpr (K == Mask::kOutput) return load<V>(z + j) > 0.f ? gj : V{};
  if constexpr (K == Mask::kInput) return (load<V>(x + j) - f.m) * f.a + f.b > 0.f ? gj : V{};
  return gj;
}

/// Stores g' into the residual's gradient as R says (scalar or vector).
template <ResidualGrad R, class V>
inline void store_residual(float* __restrict r, int64_t j, V v) {
  if constexpr (R == ResidualGrad::kAssign) {
    std::memcpy(r + j, &v, sizeof v);
  } else if constexpr (R == ResidualGrad::kAdd) {
    V old = load<V>(r + j);
    old += v;
    std::memcpy(r + j, &old, sizeof old);
  }
}

/// Per-channel sums of g' and g' (x - mean) for the channels [c0, c1), g'
/// written to dr as R says on the way. fwd: the forward's constants [C].
template <Mask K, ResidualGrad R>
void grad_sums(const float* g, const float* x, const float* z, float* dr,
               const std::vector<double>& mean, const std::vector<Affine>& fwd, int64_t N,
               int64_t C, int64_t S, int64_t c0, int64_t c1, std::vector<double>& sg,
               std::vector<double>& sgx) {
  if (S >= kLongPlane) {
    for (int64_t c = c0; c < c1; ++c) {
      const double mu = mean[static_cast<size_t>(c)];
      const float muf = static_cast<float>(mu);
      const Affine f = fwd[static_cast<size_t>(c)];
      LaneSums acc;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t off = (n * C + c) * S;
        const float* __restrict gi = g + off;
        const float* __restrict xi = x + off;
        const float* __restrict zi = K == Mask::kOutput ? z + off : nullptr;
        float* __restrict ri = R != ResidualGrad::kNone ? dr + off : nullptr;
        acc.add_plane(
            S,
            [&](int64_t j) {
              const Vec8f gf = grad_at<K, Vec8f>(gi, zi, xi, j, f);
              store_residual<R>(ri, j, gf);
              return std::pair{gf, gf * (load<Vec8f>(xi + j) - muf)};
            },
            [&](int64_t j) {
              const float gf = grad_at<K, float>(gi, zi, xi, j, f);
              store_residual<R>(ri, j, gf);
              const double gd = gf;
              return std::pair{gd, gd * (static_cast<double>(xi[j]) - mu)};
            });
      }
      sg[static_cast<size_t>(c - c0)] += acc.s;
      sgx[static_cast<size_t>(c - c0)] += acc.t;
    }
    return;
  }
  constexpr Mask KS = K == Mask::kInput ? Mask::kOutput : K;  // small planes read z
  std::vector<float> mean_f(static_cast<size_t>(c1 - c0));
  for (int64_t c = c0; c < c1; ++c)
    mean_f[static_cast<size_t>(c - c0)] = static_cast<float>(mean[static_cast<size_t>(c)]);
  const std::vector<float> mu = expand(mean_f, S);
  const float* __restrict pm = mu.data();
  PositionSums acc(static_cast<int64_t>(mu.size()));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = (n * C + c0) * S;
    const float* __restrict gr = g + off;
    const float* __restrict xr = x + off;
    const float* __restrict zr = KS == Mask::kOutput ? z + off : nullptr;
    float* __restrict rr = R != ResidualGrad::kNone ? dr + off : nullptr;
    acc.add_row(
        [&](int64_t j) {
          const Vec8f gf = grad_at<KS, Vec8f>(gr, zr, xr, j, {});
          store_residual<R>(rr, j, gf);
          return std::pair{gf, gf * (load<Vec8f>(xr + j) - load<Vec8f>(pm + j))};
        },
        [&](int64_t j) {
          const float gf = grad_at<KS, float>(gr, zr, xr, j, {});
          store_residual<R>(rr, j, gf);
          return std::pair{gf, gf * (xr[j] - pm[j])};
        });
  }
  acc.fold_into(S, sg.data(), sgx.data());
}

/// dr (+)= g' over the channels [c0, c1): the residual's gradient when no
/// sums pass runs to write it on the way (eval mode without d weight, d bias).
/// Reads the mask from z (a residual node never recomputes it from x).
template <Mask K>
void residual_grad(const float* g, const float* z, int64_t N, int64_t C, int64_t S, int64_t c0,
                   int64_t c1, bool fresh, float* dr) {
  constexpr Mask KR = K == Mask::kInput ? Mask::kOutput : K;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = (n * C + c0) * S, len = (c1 - c0) * S;
    const float* __restrict gi = g + off;
    const float* __restrict zi = KR == Mask::kOutput ? z + off : nullptr;
    float* __restrict ri = dr + off;
    if (fresh)
      for (int64_t j = 0; j < len; ++j) ri[j] = grad_at<KR, float>(gi, zi, nullptr, j, {});
    else
      for (int64_t j = 0; j < len; ++j) ri[j] += grad_at<KR, float>(gi, zi, nullptr, j, {});
  }
}

/// dx (+)= A g' + B (x - mean) + K per channel, for the channels [c0, c1).
template <Mask KM>
void grad_input(const float* g, const float* x, const float* z, const std::vector<Affine>& fwd,
                int64_t N, int64_t C, int64_t S, int64_t c0, const std::vector<float>& A,
                const std::vector<float>& B, const std::vector<float>& K,
                const std::vector<float>& mu, bool fresh, float* dx) {
  const int64_t width = static_cast<int64_t>(A.size());
  if (S >= kLongPlane) {
    for (int64_t i = 0; i < width; ++i) {
      const float av = A[i], bv = B[i], kv = K[i], mv = mu[i];
      const Affine f = fwd[static_cast<size_t>(c0 + i)];
      for (int64_t n = 0; n < N; ++n) {
        const int64_t off = (n * C + c0 + i) * S;
        const float* __restrict gi = g + off;
        const float* __restrict xi = x + off;
        const float* __restrict zi = KM == Mask::kOutput ? z + off : nullptr;
        float* __restrict di = dx + off;
        if (fresh)
          for (int64_t j = 0; j < S; ++j)
            di[j] = av * grad_at<KM, float>(gi, zi, xi, j, f) + bv * (xi[j] - mv) + kv;
        else
          for (int64_t j = 0; j < S; ++j)
            di[j] += av * grad_at<KM, float>(gi, zi, xi, j, f) + bv * (xi[j] - mv) + kv;
      }
    }
    return;
  }
  // Small planes: rows of width * S values with per-position constants.
  constexpr Mask KS = KM == Mask::kInput ? Mask::kOutput : KM;  // small planes read z
  const auto Ae = expand(A, S), Be = expand(B, S), Ke = expand(K, S), Me = expand(mu, S);
  const float* __restrict av = Ae.data();
  const float* __restrict bv = Be.data();
  const float* __restrict kv = Ke.data();
  const float* __restrict mv = Me.data();
  const int64_t len = width * S;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = (n * C + c0) * S;
    const float* __restrict gi = g + off;
    const float* __restrict xi = x + off;
    const float* __restrict zi = KS == Mask::kOutput ? z + off : nullptr;
    float* __restrict di = dx + off;
    if (fresh)
      for (int64_t j = 0; j < len; ++j)
        di[j] = av[j] * grad_at<KS, float>(gi, zi, xi, j, {}) + bv[j] * (xi[j] - mv[j]) + kv[j];
    else
      for (int64_t j = 0; j < len; ++j)
        di[j] += av[j] * grad_at<KS, float>(gi, zi, xi, j, {}) + bv[j] * (xi[j] - mv[j]) + kv[j];
  }
}

/// The backward of one batch_norm call, and what it keeps: sizes, the
/// per-channel statistics that call used (batch or running) and the tail
/// fused into it. A named type, so that relu_of_batch_norm can recognise a
/// batch_norm node and reuse it.
struct BatchNormBackward {
  int64_t N = 0, C = 0, S = 0, M = 0;
  bool training = true;
  bool relu = false;                 // the node's output went through a ReLU: g' = g where out > 0
  bool residual = false;             // inputs[3] was added to the batch norm's output
  std::vector<double> mean, invstd;  // [C]
  std::vector<Affine> fwd;           // [C] the forward's float constants (Mask::kInput)
  int64_t M_stat = 0;    // values behind the statistics: M, or all ranks' when synchronized
  BatchNormSync sync{};  // comm == nullptr: not synchronized

  void operator()(const Tensor& out, const Tensor& d_out, std::vector<Tensor>& in) const {
    if (!relu)
      run<Mask::kNone>(d_out, nullptr, in);
    else if (residual)
      run<Mask::kOutput>(d_out, out.data(), in);
    else
      run<Mask::kInput>(d_out, out.data(), in);
  }

  /// Adds the gradients of x, weight, bias (and the residual) for upstream
  /// gradient d_out, masked as K says (z: the fused ReLU's output).
  template <Mask KM>
  void run(const Tensor& d_out, const float* z, std::vector<Tensor>& in) const {
    bool fresh = false, dr_fresh = false;
    float* dx = in[0].requires_grad() ? grad_for_write(in[0], fresh) : nullptr;
    float* dw = in[1].requires_grad() ? in[1].grad_or_zeros().data() : nullptr;
    float* db = in[2].requires_grad() ? in[2].grad_or_zeros().data() : nullptr;
    float* dr = residual && in[3].requires_grad() ? grad_for_write(in[3], dr_fresh) : nullptr;
    const float* px = in[0].data();
    const float* pw = in[1].defined() ? in[1].data() : nullptr;
    const float* g = d_out.data();
    // The sums are needed for d weight, d bias and the train-mode d x.
    const bool need_sums = dw || db || (dx && training);
    // The residual's gradient is g' itself: the sums pass writes it on the
    // way, and once it is a fresh buffer d x reads g' back from it (one
    // stream instead of g and the mask).
    const bool dx_from_dr = dr && dr_fresh && need_sums;
    auto sums = [&](int64_t c0, int64_t c1, std::vector<double>& sg, std::vector<double>& sgx) {
      if (!dr)
        grad_sums<KM, ResidualGrad::kNone>(g, px, z, dr, mean, fwd, N, C, S, c0, c1, sg, sgx);
      else if (dr_fresh)
        grad_sums<KM, ResidualGrad::kAssign>(g, px, z, dr, mean, fwd, N, C, S, c0, c1, sg, sgx);
      else
        grad_sums<KM, ResidualGrad::kAdd>(g, px, z, dr, mean, fwd, N, C, S, c0, c1, sg, sgx);
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
    channel_blocks(C, M, [&](int64_t c0, int64_t c1) {
      const size_t width = static_cast<size_t>(c1 - c0);
      std::vector<double> sg(width, 0.0), sgx(width, 0.0);  // sum g', sum g' (x - mean)
      if (synced) {
        std::copy_n(local_sg.begin() + c0, width, sg.begin());
        std::copy_n(local_sgx.begin() + c0, width, sgx.begin());
      } else if (need_sums) {
        sums(c0, c1, sg, sgx);
      } else if (dr) {
        residual_grad<KM>(g, z, N, C, S, c0, c1, dr_fresh, dr);
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
      if (dx_from_dr)
        grad_input<Mask::kNone>(dr, px, nullptr, fwd, N, C, S, c0, A, B, K, mu, fresh, dx);
      else
        grad_input<KM>(g, px, z, fwd, N, C, S, c0, A, B, K, mu, fresh, dx);
    });
  }
};

/// y = act((x - m) a + b (+ r)) over len values: a, m, b scalars (Step 0)
/// or per-position arrays (Step 1); act = ReLU when Relu.
template <bool Res, bool Relu, int Step>
inline void affine_row(const float* __restrict xi, const float* __restrict ri, float* __restrict yo,
                       int64_t len, const float* __restrict a, const float* __restrict m,
                       const float* __restrict b) {
  for (int64_t j = 0; j < len; ++j) {
    float v = (xi[j] - m[Step * j]) * a[Step * j] + b[Step * j];
    if constexpr (Res) v = v + ri[j];
    if constexpr (Relu) v = v > 0.f ? v : 0.f;
    yo[j] = v;
  }
}

/// The output pass of batch_norm for the channels [c0, c1) with per-channel
/// constants A = gamma invstd, mean and beta.
template <bool Res, bool Relu>
void affine_out(const float* px, const float* pr, float* po, int64_t N, int64_t C, int64_t S,
                int64_t c0, const std::vector<float>& A, const std::vector<float>& mu,
                const std::vector<float>& Bf) {
  const int64_t width = static_cast<int64_t>(A.size());
  if (S >= kLongPlane) {
    for (int64_t i = 0; i < width; ++i)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t off = (n * C + c0 + i) * S;
        affine_row<Res, Relu, 0>(px + off, Res ? pr + off : nullptr, po + off, S, &A[i], &mu[i],
                                 &Bf[i]);
      }
    return;
  }
  const auto Ae = expand(A, S), Me = expand(mu, S), Be = expand(Bf, S);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t off = (n * C + c0) * S;
    affine_row<Res, Relu, 1>(px + off, Res ? pr + off : nullptr, po + off, width * S, Ae.data(),
                             Me.data(), Be.data());
  }
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, const BatchNormOptions& options, const BatchNormTail& tail) {
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
  const Tensor& res = tail.residual;
  if (res.defined() && res.shape() != x.shape())
    throw UsageError("batch_norm: residual " + shape_str(res.shape()) + " for input " +
                     shape_str(x.shape()) + ", expected the same shape");
  if (res.defined() && res.same(x)) {
    // x's gradient and the residual's would be one buffer, written by one
    // pass: run the plain composition instead.
    const Tensor y = add(batch_norm(x, weight, bias, running_mean, running_var, options), res);
    return tail.relu ? relu(y) : y;
  }

  // Per-channel statistics used by this call (batch or running), kept for the backward.
  BatchNormBackward saved;
  saved.N = N, saved.C = C, saved.S = S, saved.M = M, saved.M_stat = M,
  saved.training = options.training, saved.relu = tail.relu, saved.residual = res.defined();
  saved.mean.resize(static_cast<size_t>(C));
  saved.invstd.resize(static_cast<size_t>(C));
  saved.fwd.resize(static_cast<size_t>(C));
  const float* px = x.data();
  const float* pr = res.defined() ? res.data() : nullptr;
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

  const ChannelSums* cs = options.sums;
  if (!training || sync || !cs || !cs->filled || cs->s1.size() != static_cast<size_t>(N * C) ||
      cs->s2.size() != cs->s1.size() || cs->center.size() != static_cast<size_t>(C))
    cs = nullptr;
  channel_blocks(C, M, [&](int64_t c0, int64_t c1) {
    const size_t width = static_cast<size_t>(c1 - c0);
    std::vector<double> s1(width, 0.0), s2(width, 0.0), shift(width);
    if (training && !sync &&
        !(cs && moments_from_sums(*cs, N, C, M, c0, c1, shift.data(), s1.data(), s2.data())))
      shifted_moments(px, N, C, S, c0, c1, shift.data(), s1.data(), s2.data());
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
      saved.fwd[static_cast<size_t>(c)] = {A[i], mu[i], Bf[i]};
    }
    if (pr && tail.relu)
      affine_out<true, true>(px, pr, po, N, C, S, c0, A, mu, Bf);
    else if (pr)
      affine_out<true, false>(px, pr, po, N, C, S, c0, A, mu, Bf);
    else if (tail.relu)
      affine_out<false, true>(px, pr, po, N, C, S, c0, A, mu, Bf);
    else
      affine_out<false, false>(px, pr, po, N, C, S, c0, A, mu, Bf);
  });

  static const char* const names[2][2] = {{"batch_norm", "batch_norm_relu"},
                                          {"batch_norm_add", "batch_norm_add_relu"}};
  std::vector<Tensor> inputs{x, weight, bias};
  if (res.defined()) inputs.push_back(res);
  record(out, names[res.defined()][tail.relu], std::move(inputs), std::move(saved));
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
  if (!bn || bn->relu) return Tensor();
  Tensor z = Tensor::empty(y.shape());
  const float* py = y.data();
  float* pz = z.data();
  parallel_for(0, z.numel(), kGrain, [=](int64_t lo, int64_t hi) {
    const float* __restrict a = py;
    float* __restrict o = pz;
    for (int64_t i = lo; i < hi; ++i) o[i] = a[i] > 0.f ? a[i] : 0.f;
  });
  BatchNormBackward fused = *bn;
  fused.relu = true;
  record(z, bn->residual ? "batch_norm_add_relu" : "batch_norm_relu", node->inputs,
         std::move(fused));
  return z;
}

}  // namespace spruce::ops
