// The fused depthwise-separable pair (core/ops/conv2d_separable): on every
// block of MobileNetV1 (width 1, 28x28 input), at batches that take the
// chunked path and at batch 1 (the two calls), on 1 and 2 threads: bit for
// bit the two conv2d_fused calls it stands for, and within 1e-5 of the
// double reference of the pair; the depthwise output handed over as rows of
// channels (bit for bit the NCHW one); a 1x1 weight written between two
// calls is never served stale.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/ops/conv2d.h"
#include "core/ops/conv2d_depthwise.h"
#include "core/ops/conv2d_pointwise.h"
#include "core/ops/conv2d_separable.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;

namespace {

struct Block {
  int64_t C, OC, H, stride;
};

/// MobileNetV1's 13 blocks on a 28x28 input (width 1, first stride 1).
std::vector<Block> mobilenet_blocks() {
  const int64_t out[13] = {64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024};
  const int64_t stride[13] = {1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1};
  std::vector<Block> bs;
  int64_t c = 32, H = 28;
  for (int i = 0; i < 13; ++i) {
    if (i < 7 || i > 10) bs.push_back({c, out[i], H, stride[i]});  // 7-10 repeat block 6
    H = (H + 2 - 3) / stride[i] + 1;
    c = out[i];
  }
  return bs;
}

/// A block's tensors: input, both weights, both batch norms as scale and shift.
struct Pair {
  int64_t N;
  Block b;
  Tensor x, wd, wp, sd, hd, sp, hp, res;
  Pair(const Block& blk, int64_t n, Generator& gen) : N(n), b(blk) {
    const int64_t OH = (b.H + 2 - 3) / b.stride + 1;
    x = Tensor::rand({N, b.C, b.H, b.H}, gen, -1, 1);
    wd = Tensor::rand({b.C, 1, 3, 3}, gen, -0.5f, 0.5f);
    wp = Tensor::rand({b.OC, b.C, 1, 1}, gen, -0.1f, 0.1f);
    sd = Tensor::rand({b.C}, gen, 0.5f, 2.f), hd = Tensor::rand({b.C}, gen, -0.5f, 0.5f);
    sp = Tensor::rand({b.OC}, gen, 0.5f, 2.f), hp = Tensor::rand({b.OC}, gen, -0.5f, 0.5f);
    res = Tensor::rand({N, b.OC, OH, OH}, gen, -1, 1);
  }
  ops::ConvEpilogue dw_ep() const { return {.scale = sd, .shift = hd, .relu = true}; }
  ops::ConvEpilogue pw_ep(bool residual) const {
    return {.scale = sp, .shift = hp, .residual = residual ? res : Tensor(), .relu = true};
  }
  ops::Conv2dOptions dw_opts() const { return {.stride = b.stride, .padding = 1, .groups = b.C}; }
  Tensor fused(bool residual) const {
    return ops::separable_conv2d_fused(x, wd, dw_ep(), dw_opts(), wp, pw_ep(residual));
  }
  Tensor two_calls(bool residual) const {
    return ops::conv2d_fused(ops::conv2d_fused(x, wd, dw_ep(), dw_opts()), wp, pw_ep(residual));
  }
  /// The pair in double (the depthwise output rounded to float in between,
  /// as the kernels store it).
  std::vector<double> reference(bool residual) const {
    const ops::ConvGeometry gd = test::conv_geometry(N, b.C, b.C, b.H, b.H, 3, 3, b.stride, 1, b.C);
    const ops::ConvOutput od{sd.data(), hd.data(), nullptr, true};
    const std::vector<double> mid = test::reference_conv(gd, x.data(), wd.data(), od);
    const std::vector<float> midf(mid.begin(), mid.end());
    const ops::ConvGeometry gp = test::conv_geometry(N, b.C, b.OC, gd.OH, gd.OW, 1, 1);
    const ops::ConvOutput op{sp.data(), hp.data(), residual ? res.data() : nullptr, true};
    return test::reference_conv(gp, midf.data(), wp.data(), op);
  }
};

std::string describe(const Block& b, int64_t N) {
  std::ostringstream os;
  os << "N" << N << " C" << b.C << "->" << b.OC << " " << b.H << "x" << b.H << " s" << b.stride;
  return os.str();
}

double rel_error(const Tensor& got, const std::vector<double>& want) {
  double diff = 0, size = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(got.data()[i] - want[i]));
    size = std::max(size, std::abs(want[i]));
  }
  return diff / size;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.numel(), b.data());
}

const bool kNoPointwise =
    spruce::test::skip_unless(ops::pointwise::best_isa() != ops::pointwise::Isa::kNone,
                              "built without AVX2 + FMA: the pair always runs as two calls");

}  // namespace

TEST_CASE("separable pair: bit for bit the two conv2d_fused calls, and the double reference") {
  Generator gen(41);
  NoGradGuard no_grad;
  const int saved = num_threads();
  for (const Block& b : mobilenet_blocks())
    for (const int64_t N : {1, 9, 40}) {
      const Pair p(b, N, gen);
      const bool check_reference = b.C * b.OC * b.H * b.H * N <= (int64_t{1} << 27);
      for (const bool residual : {false, true})
        for (const int threads : {1, 2}) {
          set_num_threads(threads);
          INFO(describe(b, N) << (residual ? " residual" : "") << " threads " << threads);
          const Tensor got = p.fused(residual);
          CHECK(same_bits(got, p.two_calls(residual)));
          if (check_reference && threads == 2) CHECK(rel_error(got, p.reference(residual)) < 1e-5);
        }
    }
  set_num_threads(saved);
}

TEST_CASE("separable pair: the chunked path runs on MobileNetV1's early blocks at batch 40" *
          doctest::skip(kNoPointwise)) {
  // Guards the test above: it must have exercised the chunked path, not
  // only the two calls.
  Generator gen(43);
  NoGradGuard no_grad;
  const int saved = num_threads();
  set_num_threads(2);
  for (const Block& b : mobilenet_blocks()) {
    if ((b.H + 2 - 3) / b.stride + 1 < 7) continue;  // small planes, big weights: maybe two calls
    const Pair p(b, 40, gen);
    const int64_t runs = ops::separable_fused_runs();
    p.fused(false);
    INFO(describe(b, 40));
    CHECK(ops::separable_fused_runs() == runs + 1);
  }
  set_num_threads(saved);
}

TEST_CASE("depthwise tiles with the output as rows: the reference, bit for bit the NCHW output" *
          doctest::skip(kNoPointwise)) {
  // The pair's hand-over (depthwise::tiles::forward_rows): every depthwise
  // conv of MobileNetV1 on 28x28 and 32x32 inputs, batch 1 and 3, rows of
  // ld > C floats whose spare floats stay untouched.
  Generator gen(53);
  NoGradGuard no_grad;
  const int saved = num_threads();
  for (const int64_t H0 : {28, 32}) {
    const int64_t out[13] = {64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024};
    const int64_t stride[13] = {1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1};
    int64_t C = 32, H = H0;
    for (int i = 0; i < 13; ++i) {
      for (const int64_t N : {1, 3}) {
        const Pair p({C, out[i], H, stride[i]}, N, gen);
        const ops::ConvGeometry g = test::conv_geometry(N, C, C, H, H, 3, 3, stride[i], 1, C);
        const ops::ConvOutput od{p.sd.data(), p.hd.data(), nullptr, true};
        const std::vector<double> want = test::reference_conv(g, p.x.data(), p.wd.data(), od);
        const int64_t P = g.P(), ld = C + 3;
        for (const int threads : {1, 2}) {
          set_num_threads(threads);
          INFO(describe({C, out[i], H, stride[i]}, N) << " threads " << threads);
          std::vector<float> rows(static_cast<size_t>(N * P * ld), -7.f);
          ops::depthwise::tiles::forward_rows(p.x.data(), p.wd.data(), od, g, rows.data(), ld);
          std::vector<float> planes(want.size());
          ops::depthwise::tiles::forward(p.x.data(), p.wd.data(), od, g, planes.data());
          bool same = true, spare_kept = true;
          double diff = 0, size = 1;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t q = 0; q < P; ++q) {
              const float* row = rows.data() + (n * P + q) * ld;
              for (int64_t c = 0; c < C; ++c) {
                const size_t at = static_cast<size_t>((n * C + c) * P + q);
                same = same && row[c] == planes[at];
                diff = std::max(diff, std::abs(row[c] - want[at]));
                size = std::max(size, std::abs(want[at]));
              }
              for (int64_t c = C; c < ld; ++c) spare_kept = spare_kept && row[c] == -7.f;
            }
          CHECK(same);
          CHECK(spare_kept);
          CHECK(diff / size < 1e-5);
        }
      }
      H = (H + 2 - 3) / stride[i] + 1;
      C = out[i];
    }
  }
  set_num_threads(saved);
}

TEST_CASE("separable pair: a 1x1 weight written between calls is never served stale") {
  Generator gen(47);
  NoGradGuard no_grad;
  const int saved = num_threads();
  set_num_threads(2);
  Pair p({64, 128, 14, 1}, 16, gen);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const Tensor got = p.fused(false);
    CHECK(rel_error(got, p.reference(false)) < 1e-5);
    float* w = p.wp.data();
    for (int64_t i = 0; i < p.wp.numel(); i += 7) w[i] = -w[i] + 0.03f;
  }
  set_num_threads(saved);
}
