// matmul and linear on ops::sgemm (row-major, split over spruce's threads);
// small linear layers on dot products of our own (a sample then gets the same bits in any batch).
#include "matmul.h"

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "gemm.h"
#include "mac_counter.h"

namespace spruce::ops {

namespace {

/// Weights up to this many floats (a classifier head: 10 x 1024 in
/// MobileNetV1) take linear_rows, with or without a graph (a training
/// forward gives the same bits either way).
constexpr int64_t kRowsLinearMaxWeights = 1 << 16;

/// out[n][o] = bias[o] + x[n] . weight[o], each dot product in 16 lanes
/// summed in a fixed order: a sample's outputs do not depend on the batch
/// it comes in or the thread count (OpenBLAS's sgemm picks kernels by the
/// matrices' sizes, and rounded a sample differently in batches of 13 and 37),
/// which lets inference split a batch into chunks without changing a bit
/// (layers/inference_threads.h).
void linear_rows(const float* x, const float* weight, const float* bias, int64_t N, int64_t In,
                 int64_t Out, float* out) {
  constexpr int64_t L = 16;
  constexpr int64_t kMinChunkMacs = 1 << 18;  // less is not worth a hand-off to the pool
  parallel_for(0, N, std::max<int64_t>(1, kMinChunkMacs / std::max<int64_t>(1, In * Out)),
               [&](int64_t n0, int64_t n1) {
                 for (int64_t n = n0; n < n1; ++n)
                   for (int64_t o = 0; o < Out; ++o) {
                     const float* a = x + n * In;
                     const float* w = weight + o * In;
                     float lane[L] = {};
                     int64_t k = 0;
                     for (; k + L <= In; k += L)
                       for (int64_t l = 0; l < L; ++l) lane[l] += a[k + l] * w[k + l];
                     for (int64_t l = 0; k + l < In; ++l) lane[l] += a[k + l] * w[k + l];
                     float sum = bias ? bias[o] : 0.f;
                     for (int64_t l = 0; l < L; ++l) sum += lane[l];
                     out[n * Out + o] = sum;
                   }
               });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(0))
    throw UsageError("matmul: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()));
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  count_macs(M * K * N);
  Tensor out = Tensor::empty({M, N});
  sgemm(false, false, M, N, K, 1.f, a.data(), K, b.data(), N, 0.f, out.data(), N);
  record(out, "matmul", {a, b},
         [M, K, N](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           if (in[0].requires_grad())  // d a [M, K] += d_out [M, N] @ b^T
             sgemm(false, true, M, K, N, 1.f, d_out.data(), N, in[1].data(), N, 1.f,
                   in[0].grad_or_zeros().data(), K);
           if (in[1].requires_grad())  // d b [K, N] += a^T @ d_out
             sgemm(true, false, K, N, M, 1.f, in[0].data(), K, d_out.data(), N, 1.f,
                   in[1].grad_or_zeros().data(), N);
         });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (x.dim() != 2 || weight.dim() != 2 || x.size(1) != weight.size(1))
    throw UsageError("linear: input " + shape_str(x.shape()) + " and weight " +
                     shape_str(weight.shape()));
  const int64_t N = x.size(0), In = x.size(1), Out = weight.size(0);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != Out))
    throw UsageError("linear: bias " + shape_str(bias.shape()) + " for " + std::to_string(Out) +
                     " outputs");
  count_macs(N * In * Out);
  Tensor out = Tensor::empty({N, Out});
  float* po = out.data();
  if (In * Out <= kRowsLinearMaxWeights) {
    linear_rows(x.data(), weight.data(), bias.defined() ? bias.data() : nullptr, N, In, Out, po);
  } else {
    if (bias.defined()) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < Out; ++o) po[n * Out + o] = bias.data()[o];
    }
    // out [N, Out] (+)= x [N, In] @ weight^T
    sgemm(false, true, N, Out, In, 1.f, x.data(), In, weight.data(), In, bias.defined() ? 1.f : 0.f,
          po, Out);
  }
  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  record(out, "linear", std::move(inputs),
         [N, In, Out](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           const float* g = d_out.data();
           if (in[0].requires_grad())  // d x [N, In] += d_out @ weight
             sgemm(false, false, N, In, Out, 1.f, g, Out, in[1].data(), In, 1.f,
                   in[0].grad_or_zeros().data(), In);
           if (in[1].requires_grad())  // d weight [Out, In] += d_out^T @ x
             sgemm(true, false, Out, In, N, 1.f, g, Out, in[0].data(), In, 1.f,
                   in[1].grad_or_zeros().data(), In);
           if (in.size() > 2 && in[2].requires_grad()) {
             float* db = in[2].grad_or_zeros().data();
             for (int64_t n = 0; n < N; ++n)
               for (int64_t o = 0; o < Out; ++o) db[o] += g[n * Out + o];
           }
         });
  return out;
}

}  // namespace spruce::ops
