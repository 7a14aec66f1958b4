// The pointwise conv micro-kernels (core/ops/conv2d_pointwise) and the
// portable GEMM path they replace, each against the double-precision
// reference (tests/core/conv_reference.h) within 1e-5 relative, on every 1x1
// conv of MobileNetV1 (width 1, 28x28 and 32x32 inputs) and of ResNet-20
// option B (its stride-2 shortcuts), batch 1 and 3, plain (a bias) and fused
// (scale, shift, residual, ReLU), with pruned weights, the columns packed
// from NCHW or given as rows (as the fused separable pair hands them over),
// and AVX-512's planes kernel on the large planes; and conv2d on every 3x3
// geometry of ResNet-20. A path the build lacks (AVX-512 on an AVX2 build,
// both on a portable one) is reported as skipped.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/ops/conv2d.h"
#include "core/ops/conv2d_gemm.h"
#include "core/ops/conv2d_pointwise.h"
#include "core/ops/packed_weights.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;
using ops::pointwise::Isa;
using spruce::test::skip_unless;

namespace {

struct Geometry {
  int64_t C, OC, H, W, K, stride, padding;
};

/// Every 1x1 conv of MobileNetV1 (width 1, first stride 1) on an H x H
/// input: block i's pointwise conv sees the plane its depthwise conv left.
std::vector<Geometry> mobilenet_pointwise(int64_t H) {
  const int64_t out[13] = {64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024};
  const int64_t stride[13] = {1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1};
  std::vector<Geometry> gs;
  int64_t c = 32;
  for (int i = 0; i < 13; ++i) {
    H = (H + 2 - 3) / stride[i] + 1;
    if (i < 7 || i > 10) gs.push_back({c, out[i], H, H, 1, 1, 0});  // blocks 7-11 repeat block 6
    c = out[i];
  }
  return gs;
}

/// ResNet-20's convs on an H x H input with `in` channels: the stem, the
/// 3x3 convs of the three stages, and option B's 1x1 stride-2 shortcuts.
std::vector<Geometry> resnet20(int64_t in, int64_t H) {
  return {{in, 16, H, H, 3, 1, 1},         {16, 16, H, H, 3, 1, 1},
          {16, 32, H, H, 3, 2, 1},         {32, 32, H / 2, H / 2, 3, 1, 1},
          {32, 64, H / 2, H / 2, 3, 2, 1}, {64, 64, (H + 3) / 4, (H + 3) / 4, 3, 1, 1},
          {16, 32, H, H, 1, 2, 0},         {32, 64, H / 2, H / 2, 1, 2, 0}};
}

std::vector<Geometry> pointwise_geometries() {
  std::vector<Geometry> gs;
  for (int64_t H : {28, 32})
    for (const Geometry& g : mobilenet_pointwise(H)) gs.push_back(g);
  for (int64_t H : {28, 32})
    for (const Geometry& g : resnet20(1, H))
      if (g.K == 1) gs.push_back(g);
  // The planes kernel's 2-vector tail tile (121 = 2 x 48 + 25), a partial channel block.
  gs.push_back({24, 20, 11, 11, 1, 1, 0});
  return gs;
}

std::string describe(const ops::ConvGeometry& g, bool fused) {
  std::ostringstream os;
  os << "N" << g.N << " C" << g.C << "->" << g.OC << " " << g.H << "x" << g.W << " k" << g.KH
     << " s" << g.stride << (fused ? " fused" : " plain");
  return os.str();
}

std::vector<float> random_values(int64_t n, Generator& gen, float lo, float hi) {
  const Tensor t = Tensor::rand({n}, gen, lo, hi);
  return {t.data(), t.data() + n};
}

/// A conv's inputs and the two output transforms checked: a plain conv
/// with a bias, and a fused one (scale, shift, residual, ReLU).
struct Problem {
  ops::ConvGeometry g;
  std::vector<float> x, w, scale, shift, residual;
  Problem(const Geometry& geo, int64_t N, Generator& gen)
      : g(test::conv_geometry(N, geo.C, geo.OC, geo.H, geo.W, geo.K, geo.K, geo.stride,
                              geo.padding)) {
    x = random_values(N * g.C * g.H * g.W, gen, -1, 1);
    w = random_values(g.OC * g.Kc(), gen, -0.2f, 0.2f);
    for (size_t i = 0; i < w.size(); i += 3) w[i] = 0.f;  // pruned weights
    scale = random_values(g.OC, gen, 0.5f, 2.f);
    shift = random_values(g.OC, gen, -1, 1);
    residual = random_values(N * g.OC * g.P(), gen, -1, 1);
  }
  ops::ConvOutput output(bool fused) const {
    if (!fused) return {.shift = shift.data()};
    return {scale.data(), shift.data(), residual.data(), true};
  }
};

/// max |got - want| relative to the largest |want| (at least 1).
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, size = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(got[i] - want[i]));
    size = std::max(size, std::abs(want[i]));
  }
  return diff / size;
}

/// Runs `path` on every pointwise geometry, batch 1 and 3, plain and fused,
/// on 1 and 2 threads, against the reference.
template <class Path>
void check_pointwise_path(const Path& path) {
  Generator gen(17);
  const int saved = num_threads();
  for (const Geometry& geo : pointwise_geometries())
    for (const int64_t N : {1, 3}) {
      const Problem pr(geo, N, gen);
      for (const bool fused : {false, true}) {
        const ops::ConvOutput o = pr.output(fused);
        const std::vector<double> want = test::reference_conv(pr.g, pr.x.data(), pr.w.data(), o);
        for (const int threads : {1, 2}) {
          set_num_threads(threads);
          std::vector<float> got(want.size(), -7.f);
          path(pr, o, got.data());
          INFO(describe(pr.g, fused) << " threads " << threads);
          CHECK(rel_error(got, want) < 1e-5);
        }
      }
    }
  set_num_threads(saved);
}

const bool kNoAvx512 = skip_unless(ops::pointwise::best_isa() == Isa::kAvx512,
                                   "built without AVX-512: no AVX-512 pointwise kernel to test");
const bool kNoAvx2 = skip_unless(ops::pointwise::best_isa() != Isa::kNone,
                                 "built without AVX2 + FMA: no pointwise kernels to test");

}  // namespace

TEST_CASE("pointwise AVX-512 kernel matches the double reference on MobileNetV1 and ResNet-20" *
          doctest::skip(kNoAvx512)) {
  check_pointwise_path([](const Problem& p, const ops::ConvOutput& o, float* out) {
    ops::pointwise::forward(p.x.data(), p.w.data(), o, p.g, out, Isa::kAvx512);
  });
}

TEST_CASE("pointwise AVX2 kernel matches the double reference on MobileNetV1 and ResNet-20" *
          doctest::skip(kNoAvx2)) {
  check_pointwise_path([](const Problem& p, const ops::ConvOutput& o, float* out) {
    ops::pointwise::forward(p.x.data(), p.w.data(), o, p.g, out, Isa::kAvx2);
  });
}

namespace {

/// forward_rows() of `isa` on every pointwise geometry: the columns given
/// as rows (ld > C, a few spare floats per row, and the padding rows the
/// kernel reads past the last column filled with NaN, whose outputs must be
/// dropped); within 1e-5 of the reference and bit for bit forward().
void check_rows_path(Isa isa) {
  check_pointwise_path([isa](const Problem& p, const ops::ConvOutput& o, float* out) {
    const ops::ConvGeometry& g = p.g;
    const int64_t Q = g.N * g.P(), ld = g.C + 5, pad = ops::pointwise::rows_padding(isa);
    REQUIRE(pad > 0);
    std::vector<float> rows(static_cast<size_t>((Q + pad) * ld), std::nanf(""));
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t n = q / g.P(), p0 = q % g.P();
      const int64_t at = (p0 / g.OW) * g.stride * g.W + (p0 % g.OW) * g.stride;
      for (int64_t c = 0; c < g.C; ++c) rows[q * ld + c] = p.x[(n * g.C + c) * g.H * g.W + at];
    }
    ops::pointwise::forward_rows(rows.data(), ld, p.w.data(), o, g, out, isa);
    std::vector<float> packed(static_cast<size_t>(g.N * g.OC * g.P()));
    ops::pointwise::forward(p.x.data(), p.w.data(), o, g, packed.data(), isa);
    CHECK(std::equal(packed.begin(), packed.end(), out));
  });
}

}  // namespace

TEST_CASE("pointwise AVX-512 kernel on columns given as rows: the reference, bit for bit packed" *
          doctest::skip(kNoAvx512)) {
  check_rows_path(Isa::kAvx512);
}

TEST_CASE("pointwise AVX2 kernel on columns given as rows: the reference, bit for bit packed" *
          doctest::skip(kNoAvx2)) {
  check_rows_path(Isa::kAvx2);
}

TEST_CASE("the AVX-512 planes kernel takes the large planes: the tests above cover it" *
          doctest::skip(kNoAvx512)) {
  // The planes kernel checked against the reference and, through the rows
  // test (panels on rows), bit for bit against the panels.
  int64_t large = 0;
  for (const Geometry& geo : pointwise_geometries()) {
    const ops::ConvGeometry g =
        test::conv_geometry(1, geo.C, geo.OC, geo.H, geo.W, 1, 1, geo.stride, geo.padding);
    const bool planes = geo.stride == 1 && g.P() >= 96;
    CHECK(ops::pointwise::planes_kernel(g, Isa::kAvx512) == planes);
    CHECK_FALSE(ops::pointwise::planes_kernel(g, Isa::kAvx2));
    large += planes;
  }
  CHECK(large >= 7);
}

TEST_CASE("portable GEMM path matches the double reference on the same 1x1 convs") {
  check_pointwise_path([](const Problem& p, const ops::ConvOutput& o, float* out) {
    ops::gemm_conv::forward(p.x.data(), p.w.data(), o, p.g, 0, p.g.N, out);
  });
}

TEST_CASE("conv2d takes the pointwise kernel for 1x1 convs: bit for bit its output" *
          doctest::skip(kNoAvx2)) {
  Generator gen(5);
  const Problem p({64, 96, 4, 4, 1, 1, 0}, 5, gen);
  const Tensor x = Tensor::from_data({5, 64, 4, 4}, p.x);
  const Tensor w = Tensor::from_data({96, 64, 1, 1}, p.w);
  const Tensor b = Tensor::from_data({96}, p.shift);
  const Tensor y = ops::conv2d(x, w, b);
  std::vector<float> want(static_cast<size_t>(y.numel()));
  ops::pointwise::forward(p.x.data(), p.w.data(), p.output(false), p.g, want.data());
  CHECK(std::equal(want.begin(), want.end(), y.data()));
}

TEST_CASE("conv2d_fused matches the double reference on every ResNet-20 geometry") {
  Generator gen(23);
  NoGradGuard no_grad;
  for (const int64_t in : {1, 3})
    for (const Geometry& geo : resnet20(in, in == 1 ? 28 : 32))
      for (const int64_t N : {1, 2}) {
        const Problem p(geo, N, gen);
        const ops::ConvOutput o = p.output(true);
        const Tensor y = ops::conv2d_fused(
            Tensor::from_data({N, p.g.C, p.g.H, p.g.W}, p.x),
            Tensor::from_data({p.g.OC, p.g.C, p.g.KH, p.g.KW}, p.w),
            {.scale = Tensor::from_data({p.g.OC}, p.scale),
             .shift = Tensor::from_data({p.g.OC}, p.shift),
             .residual = Tensor::from_data({N, p.g.OC, p.g.OH, p.g.OW}, p.residual),
             .relu = true},
            {.stride = p.g.stride, .padding = p.g.padding});
        const std::vector<double> want = test::reference_conv(p.g, p.x.data(), p.w.data(), o);
        INFO(describe(p.g, true));
        CHECK(rel_error({y.data(), y.data() + y.numel()}, want) < 1e-5);
      }
}

TEST_CASE(
    "pointwise kernels with a kept packed copy match the reference, also after the weight "
    "changes" *
    doctest::skip(kNoAvx2)) {
  // The kernel keeps w's packed copy under w's content version: the same
  // version reuses it, a write to w (a new version) repacks. Both ISAs, each
  // call against the double reference of the weight as it is at that call.
  Generator gen(29);
  NoGradGuard no_grad;
  std::vector<Isa> isas{Isa::kAvx2};
  if (ops::pointwise::best_isa() == Isa::kAvx512) isas.push_back(Isa::kAvx512);
  for (const Isa isa : isas)
    for (const Geometry& geo : {Geometry{64, 96, 4, 4, 1, 1, 0}, Geometry{32, 40, 7, 7, 1, 2, 0}}) {
      const Problem p(geo, 3, gen);
      Tensor w = Tensor::from_data({p.g.OC, p.g.C, 1, 1}, p.w);
      const ops::ConvOutput o = p.output(true);
      auto check = [&](const char* when) {
        const ContentVersion v = w.content_version();
        std::vector<float> got(static_cast<size_t>(p.g.N * p.g.OC * p.g.P()), -7.f);
        ops::pointwise::forward(p.x.data(), std::as_const(w).data(), o, p.g, got.data(), isa, &v);
        const std::vector<double> want =
            test::reference_conv(p.g, p.x.data(), std::as_const(w).data(), o);
        INFO(describe(p.g, true) << " isa " << static_cast<int>(isa) << " " << when);
        CHECK(rel_error(got, want) < 1e-5);
      };
      const int64_t fills0 = ops::packed_weight_fills();
      check("first call");
      check("same weight");
      CHECK(ops::packed_weight_fills() == fills0 + 1);  // packed once for both calls
      w.data()[5] += 0.5f;                              // one weight changed in place
      check("after one weight changed");
      w.fill_(0.25f);
      check("after a fill");
      CHECK(ops::packed_weight_fills() == fills0 + 3);
    }
}

TEST_CASE("conv2d_fused on a 1x1 conv follows its weight from call to call") {
  // The public path: a weight written between two calls (as an optimizer
  // step or a checkpoint load would) gives the new weight's result.
  Generator gen(31);
  NoGradGuard no_grad;
  const Problem p({48, 64, 4, 4, 1, 1, 0}, 2, gen);
  const Tensor x = Tensor::from_data({2, 48, 4, 4}, p.x);
  Tensor w = Tensor::from_data({64, 48, 1, 1}, p.w);
  const ops::ConvEpilogue e{.scale = Tensor::from_data({64}, p.scale),
                            .shift = Tensor::from_data({64}, p.shift),
                            .relu = true};
  const ops::ConvOutput o{p.scale.data(), p.shift.data(), nullptr, true};
  for (int step = 0; step < 3; ++step) {
    const Tensor y = ops::conv2d_fused(x, w, e, {});
    const std::vector<double> want =
        test::reference_conv(p.g, p.x.data(), std::as_const(w).data(), o);
    INFO("step " << step);
    CHECK(rel_error({y.data(), y.data() + y.numel()}, want) < 1e-5);
    float* pw = w.data();
    for (int64_t i = 0; i < w.numel(); ++i) pw[i] = -pw[i] + 0.01f * static_cast<float>(step);
  }
}

TEST_CASE("a 1x1 conv whose weight is being trained keeps no packed copy" *
          doctest::skip(kNoAvx2)) {
  // Training changes the weight after every step (and a masked weight is a
  // fresh product each call): keeping copies would only allocate.
  Generator gen(37);
  const Problem p({48, 64, 4, 4, 1, 1, 0}, 2, gen);
  const Tensor x = Tensor::from_data({2, 48, 4, 4}, p.x);
  Tensor w = Tensor::from_data({64, 48, 1, 1}, p.w);
  w.set_requires_grad(true);
  const int64_t fills0 = ops::packed_weight_fills();
  const Tensor y = ops::conv2d(x, w, Tensor(), {});
  CHECK(ops::packed_weight_fills() == fills0);
  const ops::ConvOutput o{nullptr, nullptr, nullptr, false};
  CHECK(rel_error({y.data(), y.data() + y.numel()},
                  test::reference_conv(p.g, p.x.data(), p.w.data(), o)) < 1e-5);
  NoGradGuard no_grad;  // inference on the same weight: packed once, kept
  ops::conv2d(x, w, Tensor(), {});
  ops::conv2d(x, w, Tensor(), {});
  CHECK(ops::packed_weight_fills() == fills0 + 1);
}
