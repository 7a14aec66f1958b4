// Sparse inference kernels (core/ops/sparse_conv2d.h) against a double
// reference: random masks at densities 0, 1, 10, 50, 99 and 100 %, whole
// output and input channels pruned, every conv and linear geometry of
// ResNet-20 B and MobileNetV1 on 28x28 inputs (the committed checkpoints),
// batch 1 and > 1, the fused epilogue (scale, shift, residual, ReLU), 1 and 2
// threads, and odd geometries (strides 2 and 3, unpadded, 1x1 with padding).
// Each value must be within 1e-5 relative to the sum of the magnitudes of its
// terms. The packing row copies (sparse_pack.h) are checked on their own for
// every length, step 1 and 2, nothing written outside the rows.
//
// The SIMD path comes from SPRUCE_SPARSE_PATH (portable, avx2, avx512; meson
// runs one test per path). When the CPU lacks the path the test prints
// SKIPPED and exits 77, which meson reports as a skip, never as a pass.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops/sparse_conv2d.h"
#include "core/ops/sparse_pack.h"
#include "core/ops/sparse_spmm.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace spruce;
using ops::sparse::SimdPath;

namespace {

/// The path under test, forced for the whole run; exits 77 when unsupported.
SimdPath path_under_test() {
  static const SimdPath path = [] {
    const char* env = std::getenv("SPRUCE_SPARSE_PATH");
    const std::string want = env ? env : "";
    SimdPath p = ops::sparse::active_path();
    for (SimdPath q : ops::sparse::kAllSimdPaths)
      if (want == ops::sparse::path_name(q)) p = q;
    if (!ops::sparse::path_supported(p)) {
      std::printf("SKIPPED: this CPU cannot run the %s sparse kernels\n",
                  ops::sparse::path_name(p));
      std::exit(77);
    }
    ops::sparse::force_path(p);
    return p;
  }();
  return path;
}

struct Geometry {
  const char* name;
  int64_t C, OC, H, k, stride, pad;
};

// fmnist 28x28: ResNet-20 B (convs and 1x1 stride-2 shortcuts) and
// MobileNetV1's first conv and pointwise convs (its depthwise convs stay dense).
const Geometry kGeometries[] = {
    {"r20 conv1", 1, 16, 28, 3, 1, 1},        {"r20 stage1", 16, 16, 28, 3, 1, 1},
    {"r20 stage2 down", 16, 32, 28, 3, 2, 1}, {"r20 stage2", 32, 32, 14, 3, 1, 1},
    {"r20 shortcut2", 16, 32, 28, 1, 2, 0},   {"r20 stage3 down", 32, 64, 14, 3, 2, 1},
    {"r20 stage3", 64, 64, 7, 3, 1, 1},       {"r20 shortcut3", 32, 64, 14, 1, 2, 0},
    {"mb conv1", 1, 32, 28, 3, 1, 1},         {"mb pw 28", 32, 64, 28, 1, 1, 0},
    {"mb pw 14a", 64, 128, 14, 1, 1, 0},      {"mb pw 14b", 128, 128, 14, 1, 1, 0},
    {"mb pw 7a", 128, 256, 7, 1, 1, 0},       {"mb pw 7b", 256, 256, 7, 1, 1, 0},
    {"mb pw 4a", 256, 512, 4, 1, 1, 0},       {"mb pw 4b", 512, 512, 4, 1, 1, 0},
    {"mb pw 2a", 512, 1024, 2, 1, 1, 0},      {"mb pw 2b", 1024, 1024, 2, 1, 1, 0},
};

/// A 0/1 mask keeping a fraction `density` of the entries at random.
Tensor random_mask(const Shape& shape, double density, Generator& gen) {
  Tensor u = Tensor::rand(shape, gen);
  Tensor m = Tensor::empty(shape);
  for (int64_t i = 0; i < m.numel(); ++i) m.data()[i] = u.at(i) < density ? 1.f : 0.f;
  return m;
}

/// Checks got against the double reference of
/// act(scale conv(x, w m) + shift + residual).
void check_conv(const Tensor& got, const Tensor& x, const Tensor& w, const Tensor& m,
                const Tensor& scale, const Tensor& shift, const Tensor& res, bool relu,
                int64_t stride, int64_t pad, const std::string& what) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OC = w.size(0), KH = w.size(2), KW = w.size(3);
  const int64_t OH = (H + 2 * pad - KH) / stride + 1, OW = (W + 2 * pad - KW) / stride + 1;
  REQUIRE(got.shape() == Shape{N, OC, OH, OW});
  int64_t bad = 0;
  double worst = 0;
  const float *xd = x.data(), *wd = w.data(), *md = m.data(), *gd = got.data();
  std::vector<double> wm(static_cast<size_t>(w.numel()));
  for (size_t i = 0; i < wm.size(); ++i) wm[i] = static_cast<double>(wd[i]) * md[i];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double sum = 0, mag = 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t kh = 0; kh < KH; ++kh) {
              const int64_t ih = oh * stride - pad + kh;
              if (ih < 0 || ih >= H) continue;
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t iw = ow * stride - pad + kw;
                if (iw < 0 || iw >= W) continue;
                const double wv = wm[static_cast<size_t>(((o * C + c) * KH + kh) * KW + kw)];
                if (wv == 0) continue;
                const double t = wv * xd[((n * C + c) * H + ih) * W + iw];
                sum += t, mag += std::fabs(t);
              }
            }
          const double sc = scale.defined() ? scale.at(o) : 1.0;
          const double sh = shift.defined() ? shift.at(o) : 0.0;
          const int64_t at = ((n * OC + o) * OH + oh) * OW + ow;
          const double r = res.defined() ? res.at(at) : 0.0;
          double ref = sc * sum + sh + r;
          if (relu) ref = std::max(ref, 0.0);
          const double tol = 1e-5 * (std::fabs(sc) * mag + std::fabs(sh) + std::fabs(r)) + 1e-30;
          const double err = std::fabs(gd[at] - ref);
          worst = std::max(worst, err / tol);
          if (err > tol) ++bad;
        }
  CHECK_MESSAGE(bad == 0,
                what << ": " << bad << " values off, worst error " << worst << " x tolerance");
}

}  // namespace

TEST_CASE("sparse conv equals the double reference: geometries x densities x batch") {
  const SimdPath path = path_under_test();
  MESSAGE("sparse path: " << std::string(ops::sparse::path_name(path)));
  NoGradGuard no_grad;
  Generator gen(7);
  for (int threads : {2, 1}) {
    set_num_threads(threads);
    for (const Geometry& g : kGeometries)
      for (double density : {0.0, 0.01, 0.1, 0.5, 0.99, 1.0})
        for (int64_t N : {int64_t{1}, int64_t{3}}) {
          // Big layers at fewer settings: the double reference is slow.
          const bool big = g.C * g.OC * g.k * g.k * g.H * g.H > 3'000'000;
          if (big && (threads == 1 || (density != 0.1 && density != 1.0))) continue;
          const Shape ws{g.OC, g.C, g.k, g.k};
          Tensor x = Tensor::randn({N, g.C, g.H, g.H}, gen);
          Tensor w = Tensor::randn(ws, gen);
          Tensor m = random_mask(ws, density, gen);
          const int64_t OH = (g.H + 2 * g.pad - g.k) / g.stride + 1;
          Tensor scale = Tensor::rand({g.OC}, gen, 0.5f, 2.f);
          Tensor shift = Tensor::randn({g.OC}, gen);
          Tensor res = Tensor::randn({N, g.OC, OH, OH}, gen);
          ops::SparseWeightCache cache;
          const ops::Conv2dOptions o{.stride = g.stride, .padding = g.pad};
          const std::string what = std::string(g.name) + " density " + std::to_string(density) +
                                   " N " + std::to_string(N) + " threads " +
                                   std::to_string(threads);
          Tensor y = ops::sparse_conv2d_fused(x, w, m, cache, {scale, shift, res, true}, o);
          check_conv(y, x, w, m, scale, shift, res, true, g.stride, g.pad, what);
          Tensor plain = ops::sparse_conv2d_fused(x, w, m, cache, {}, o);
          check_conv(plain, x, w, m, {}, {}, {}, false, g.stride, g.pad, what + " plain");
        }
  }
  set_num_threads(2);
}

TEST_CASE("sparse conv: whole channels pruned, many sample groups, odd sizes") {
  path_under_test();
  NoGradGuard no_grad;
  Generator gen(11);
  struct Case {
    int64_t N, C, OC, H, W, k, stride, pad;
  };
  // Pointwise on 4x4 planes with 20 samples: groups of 16 and a partial one.
  for (const Case& c : {Case{20, 24, 40, 4, 4, 1, 1, 0}, Case{5, 8, 12, 9, 11, 3, 2, 1},
                        Case{2, 6, 10, 13, 7, 5, 1, 2}, Case{3, 7, 33, 10, 10, 3, 3, 1},
                        Case{130, 5, 9, 1, 1, 1, 1, 0}, Case{2, 4, 6, 8, 10, 3, 2, 0},
                        Case{3, 5, 7, 9, 9, 1, 2, 1}, Case{2, 3, 4, 7, 8, 1, 2, 1}}) {
    const Shape ws{c.OC, c.C, c.k, c.k};
    Tensor x = Tensor::randn({c.N, c.C, c.H, c.W}, gen);
    Tensor w = Tensor::randn(ws, gen);
    Tensor m = random_mask(ws, 0.4, gen);
    const int64_t per_out = c.C * c.k * c.k;
    for (int64_t o = 0; o < c.OC; o += 3)  // every third output channel pruned
      for (int64_t i = 0; i < per_out; ++i) m.data()[o * per_out + i] = 0.f;
    for (int64_t o = 0; o < c.OC; ++o)  // input channel 1 pruned everywhere
      for (int64_t i = 0; i < c.k * c.k; ++i) m.data()[o * per_out + c.k * c.k + i] = 0.f;
    ops::SparseWeightCache cache;
    const ops::Conv2dOptions o{.stride = c.stride, .padding = c.pad};
    Tensor shift = Tensor::randn({c.OC}, gen);
    Tensor y = ops::sparse_conv2d_fused(x, w, m, cache, {.shift = shift}, o);
    check_conv(y, x, w, m, {}, shift, {}, false, c.stride, c.pad,
               "N " + std::to_string(c.N) + " k " + std::to_string(c.k));
  }
}

TEST_CASE("fused sparse pair: bit for bit the two calls, and the double reference") {
  path_under_test();
  NoGradGuard no_grad;
  Generator gen(13);
  struct Case {
    int64_t C, C1, C2, H, W;
  };
  // ResNet-20's three stages on 28x28, and odd sizes (a non-square plane).
  for (const Case& c : {Case{16, 16, 16, 28, 28}, Case{32, 32, 32, 14, 14}, Case{64, 64, 64, 7, 7},
                        Case{5, 7, 6, 9, 11}})
    for (int threads : {2, 1})
      for (double density : {0.0, 0.01, 0.1, 0.5, 1.0})
        for (int64_t N : {int64_t{1}, int64_t{3}}) {
          if (c.C == 16 && threads == 1 && density != 0.1) continue;  // the slowest reference
          set_num_threads(threads);
          const Shape ws1{c.C1, c.C, 3, 3}, ws2{c.C2, c.C1, 3, 3};
          Tensor x = Tensor::randn({N, c.C, c.H, c.W}, gen);
          Tensor w1 = Tensor::randn(ws1, gen), w2 = Tensor::randn(ws2, gen);
          Tensor m1 = random_mask(ws1, density, gen), m2 = random_mask(ws2, density, gen);
          for (int64_t i = 0; i < c.C * 9; ++i) m1.data()[i] = 0.f;  // middle channel 0 pruned
          Tensor s1 = Tensor::rand({c.C1}, gen, 0.5f, 2.f), b1 = Tensor::randn({c.C1}, gen);
          Tensor s2 = Tensor::rand({c.C2}, gen, 0.5f, 2.f), b2 = Tensor::randn({c.C2}, gen);
          Tensor res = Tensor::randn({N, c.C2, c.H, c.W}, gen);
          const ops::Conv2dOptions o{.stride = 1, .padding = 1};
          const std::string what = "C " + std::to_string(c.C) + " H " + std::to_string(c.H) +
                                   " density " + std::to_string(density) + " N " +
                                   std::to_string(N) + " threads " + std::to_string(threads);
          for (const bool with_res : {true, false}) {
            CAPTURE(with_res);
            const ops::ConvEpilogue e1{.scale = s1, .shift = b1, .relu = true};
            const ops::ConvEpilogue e2{
                .scale = s2, .shift = b2, .residual = with_res ? res : Tensor(), .relu = with_res};
            ops::SparseWeightCache c1, c2, c1_alone, c2_alone;
            const Tensor pair = ops::sparse_conv2d_pair_fused(x, w1, m1, c1, e1, w2, m2, c2, e2);
            const Tensor mid = ops::sparse_conv2d_fused(x, w1, m1, c1_alone, e1, o);
            const Tensor two = ops::sparse_conv2d_fused(mid, w2, m2, c2_alone, e2, o);
            REQUIRE(pair.shape() == two.shape());
            int64_t differ = 0;
            for (int64_t i = 0; i < pair.numel(); ++i) differ += pair.at(i) != two.at(i);
            CHECK_MESSAGE(differ == 0, what << ": " << differ << " values differ from two calls");
            check_conv(pair, mid, w2, m2, s2, b2, with_res ? res : Tensor(), with_res, 1, 1,
                       what + " pair");
            // A second call with the caches warm (the middle buffer reused).
            const Tensor again = ops::sparse_conv2d_pair_fused(x, w1, m1, c1, e1, w2, m2, c2, e2);
            int64_t changed = 0;
            for (int64_t i = 0; i < pair.numel(); ++i) changed += again.at(i) != pair.at(i);
            CHECK_MESSAGE(changed == 0, what << ": the second call differs");
          }
        }
  set_num_threads(2);
  Tensor x = Tensor::randn({2, 4, 6, 6}, gen), w3 = Tensor::randn({4, 4, 3, 3}, gen);
  Tensor w1x1 = Tensor::randn({4, 4, 1, 1}, gen), ones = Tensor::ones({4, 4, 3, 3});
  ops::SparseWeightCache a, b;
  CHECK_THROWS_AS(
      ops::sparse_conv2d_pair_fused(x, w1x1, Tensor::ones({4, 4, 1, 1}), a, {}, w3, ones, b, {}),
      UsageError);
  CHECK_THROWS_AS(ops::sparse_conv2d_pair_fused(x, w3, ones, a, {.residual = x}, w3, ones, b, {}),
                  UsageError);
}

TEST_CASE("sparse linear equals the double reference") {
  path_under_test();
  NoGradGuard no_grad;
  Generator gen(3);
  for (auto [IN, OUT] : {std::pair<int64_t, int64_t>{64, 10}, {1024, 10}, {37, 21}})
    for (double density : {0.0, 0.01, 0.1, 0.5, 0.99, 1.0})
      for (int64_t N : {int64_t{1}, int64_t{5}, int64_t{128}}) {
        Tensor x = Tensor::randn({N, IN}, gen);
        Tensor w = Tensor::randn({OUT, IN}, gen);
        Tensor m = random_mask({OUT, IN}, density, gen);
        Tensor b = Tensor::randn({OUT}, gen);
        ops::SparseWeightCache cache;
        Tensor y = ops::sparse_linear(x, w, m, cache, b);
        REQUIRE(y.shape() == Shape{N, OUT});
        int64_t bad = 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t o = 0; o < OUT; ++o) {
            double sum = b.at(o), mag = std::fabs(b.at(o));
            for (int64_t i = 0; i < IN; ++i) {
              const double t =
                  static_cast<double>(w.at(o * IN + i)) * m.at(o * IN + i) * x.at(n * IN + i);
              sum += t, mag += std::fabs(t);
            }
            if (std::fabs(y.at(n * OUT + o) - sum) > 1e-5 * mag + 1e-30) ++bad;
          }
        CHECK_MESSAGE(bad == 0, IN << "->" << OUT << " density " << density << " N " << N);
      }
}

TEST_CASE("compressed weights follow every change of weight or mask") {
  path_under_test();
  NoGradGuard no_grad;
  Generator gen(5);
  Tensor x = Tensor::randn({2, 4, 6, 6}, gen);
  Tensor w = Tensor::randn({5, 4, 3, 3}, gen);
  Tensor m = random_mask(w.shape(), 0.3, gen);
  ops::SparseWeightCache cache;
  const ops::Conv2dOptions o{.padding = 1};
  auto check = [&](const char* what) {
    Tensor y = ops::sparse_conv2d_fused(x, w, m, cache, {}, o);
    check_conv(y, x, w, m, {}, {}, {}, false, 1, 1, what);
  };
  check("first call");
  ops::sparse_conv2d_fused(x, w, m, cache, {}, o);
  CHECK(cache.compressions() == 1);  // unchanged weights: no recompression
  m.copy_from(random_mask(w.shape(), 0.6, gen));
  check("new mask");
  w.data()[7] += 1.f;
  check("weight written");
  m.fill_(1.f);
  check("mask filled");
  Tensor view = make_view(w, {w.numel()});
  view.data()[0] = 42.f;
  check("weight written through a view");
  CHECK(cache.compressions() == 5);
}

TEST_CASE("sparse packing row copies: every count, step 1 and 2, nothing outside the rows") {
  const SimdPath path = path_under_test();
  const ops::sparse::RowCopy copy = ops::sparse::row_copy(path);
  for (int64_t step : {1, 2})
    for (int64_t count = 1; count <= 40; ++count) {
      const int64_t rows = 3, src_stride = step * count + 3, dst_stride = count + 5;
      // Exactly as long as the last row's last pixel: an over-read shows under ASan.
      std::vector<float> src(static_cast<size_t>((rows - 1) * src_stride + step * (count - 1) + 1));
      for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) + 0.5f;
      std::vector<float> dst(static_cast<size_t>(rows * dst_stride), -1.f);
      copy(src.data(), src_stride, step, count, rows, dst.data(), dst_stride);
      int64_t bad = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < dst_stride; ++k) {
          const float want = k < count ? src[static_cast<size_t>(r * src_stride + step * k)] : -1.f;
          bad += dst[static_cast<size_t>(r * dst_stride + k)] != want;
        }
      CHECK_MESSAGE(bad == 0, "step " << step << " count " << count << ": " << bad << " wrong");
    }
}
