// The block Fisher inverse, in every form, against a double-precision direct
// inverse of λI + (1/m) Σ g gᵀ on each block (1e-4 relative, normwise and on
// the diagonal, which is what ρ uses).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "pruning/woodbury.h"
#include "reference.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

/// m random gradients of length d; column scales spread over two decades,
/// like real gradients, so F is far from a multiple of the identity. With
/// `correlated`, every gradient also carries a large shared direction (as
/// real per-sample gradients do), so F has an eigenvalue ~1e6·λ or more.
GradientBank random_bank(int64_t d, int64_t m, uint64_t seed, bool correlated = false) {
  Generator gen(seed);
  std::vector<float> scale(static_cast<size_t>(d)), shared(static_cast<size_t>(d));
  for (auto& s : scale) s = std::pow(10.f, gen.uniform(-2.f, 0.f));
  for (auto& s : shared) s = gen.normal();
  GradientBank bank(d, m);
  std::vector<float> row(static_cast<size_t>(d));
  for (int64_t i = 0; i < m; ++i) {
    const float a = correlated ? 3.f * (1.f + 0.1f * gen.normal()) : 0.f;
    for (int64_t j = 0; j < d; ++j) row[j] = a * shared[j] + gen.normal() * scale[j];
    bank.add(row);
  }
  return bank;
}

/// Every block of inv equals the double inverse of its Fisher block: expanded
/// (normwise), on the diagonal (elementwise: ρ reads it), and through the
/// accessors the OBS update uses: gather (A_QQ), multiply (A_{:,Q} y) and
/// solve ((A_QQ)⁻¹ y, by the m×m form when a factored block has q > m).
void check_against_direct(const BlockInverse& inv, const GradientBank& bank, double damp,
                          const std::vector<float>& keep = {}) {
  for (int64_t b = 0; b < inv.num_blocks(); ++b) {
    const Block blk = inv.blocks()[b];
    const int64_t n = blk.size();
    const ref::Mat want = ref::inverse(
        ref::fisher(bank.data(), bank.rows(), bank.dim(), blk.begin, n, damp, keep), n);
    const std::vector<float> got = inv.dense(b);
    CHECK(ref::max_rel_err(got.data(), want.data(), n * n) < 1e-4);
    double diag_err = 0.0;
    for (int64_t i = 0; i < n; ++i)
      diag_err = std::max(diag_err, std::fabs(inv.diagonal()[blk.begin + i] - want[i * (n + 1)]) /
                                        want[i * (n + 1)]);
    CHECK(diag_err < 1e-4);
    std::vector<int64_t> idx;  // every third weight of the block, and the last
    for (int64_t i = 0; i < n; i += 3) idx.push_back(i);
    if (idx.back() != n - 1) idx.push_back(n - 1);
    const int64_t q = static_cast<int64_t>(idx.size());
    std::vector<double> aqq(q * q), want_qq(q * q), y(q), out(n), want_out(n, 0.0);
    inv.gather(b, idx, aqq.data());
    for (int64_t r = 0; r < q; ++r) {
      y[r] = 1.0 + 0.5 * r;
      for (int64_t t = 0; t < q; ++t) want_qq[r * q + t] = want[idx[r] * n + idx[t]];
      for (int64_t j = 0; j < n; ++j) want_out[j] += want[j * n + idx[r]] * y[r];
    }
    CHECK(ref::max_rel_err(aqq.data(), want_qq.data(), q * q) < 1e-4);
    inv.multiply(b, idx, y.data(), out.data());
    CHECK(ref::max_rel_err(out.data(), want_out.data(), n) < 1e-4);
    const std::vector<double> want_y = ref::solve(want_qq, y, q);
    inv.solve(b, idx, y.data());
    CHECK(ref::max_rel_err(y.data(), want_y.data(), q) < 1e-4);
  }
}

struct Case {
  std::vector<int64_t> layers;
  int64_t m, c, k;
  double damp;
  bool correlated = false;
};

}  // namespace

TEST_CASE("every method equals the direct inverse, for m < c, m > c, c not dividing the layers") {
  const std::vector<Case> cases{
      {{37}, 10, 50, 4, 1e-3},            // one block, m < c
      {{20, 13}, 40, 8, 5, 1e-5},         // m > c, c divides neither layer
      {{23, 30}, 25, 12, 7, 1e-4},        // k does not divide m
      {{64}, 64, 64, 16, 1e-5},           // m = c
      {{9, 17, 4}, 3, 6, 1, 1e-2},        // m tiny, k = 1 (the rank-1 recursion)
      {{7, 3}, 5, 1, 2, 1e-3},            // c = 1: the diagonal
      {{150}, 20, 150, 8, 1e-5},          // m ≪ c with the reference's λ
      {{60, 45}, 30, 50, 8, 1e-5, true},  // badly conditioned (a shared direction), m < c
      {{60, 45}, 80, 50, 8, 1e-5, true},  // the same with m > c
  };
  for (const Case& t : cases) {
    int64_t d = 0;
    for (int64_t n : t.layers) d += n;
    const GradientBank bank = random_bank(d, t.m, 7 + d, t.correlated);
    for (InverseMethod method : {InverseMethod::kDirect, InverseMethod::kGram,
                                 InverseMethod::kRecursion, InverseMethod::kAuto}) {
      CAPTURE(d);
      CAPTURE(t.m);
      CAPTURE(t.c);
      CAPTURE(static_cast<int>(method));
      const BlockInverse inv =
          block_fisher_inverse(bank, make_blocks(t.layers, t.c), {t.damp, method, t.k});
      check_against_direct(inv, bank, t.damp);
    }
  }
}

TEST_CASE("the rank-1 recursion equals the direct inverse") {
  const int64_t d = 30, m = 45;
  const double damp = 1e-4;
  const GradientBank bank = random_bank(d, m, 3);
  for (auto [begin, n] : {std::pair<int64_t, int64_t>{0, 30}, {7, 11}}) {
    const std::vector<double> got = woodbury_rank1_inverse(bank.data() + begin, m, n, d, damp);
    const ref::Mat want = ref::inverse(ref::fisher(bank.data(), m, d, begin, n, damp), n);
    CHECK(ref::max_rel_err(got.data(), want.data(), n * n) < 1e-9);
  }
}

TEST_CASE("block inverse with c >= d is the full inverse") {
  const int64_t d = 40, m = 25;
  const double damp = 1e-3;
  const GradientBank bank = random_bank(d, m, 11);
  const std::vector<int64_t> layers{d};
  const BlockInverse inv = block_fisher_inverse(bank, make_blocks(layers, 1000), {damp});
  REQUIRE(inv.num_blocks() == 1);
  const ref::Mat full = ref::inverse(ref::fisher(bank.data(), m, d, 0, d, damp), d);
  CHECK(ref::max_rel_err(inv.dense(0).data(), full.data(), d * d) < 1e-4);
  check_against_direct(inv, bank, damp);
}

TEST_CASE("masked weights: their gradient entries count as zero and they decouple") {
  const int64_t d = 18, m = 12;
  const double damp = 1e-3;
  const GradientBank bank = random_bank(d, m, 5);
  std::vector<float> keep(d, 1.f);
  for (int64_t q : {1, 4, 5, 13}) keep[q] = 0.f;
  const std::vector<int64_t> layers{10, 8};
  for (InverseMethod method :
       {InverseMethod::kDirect, InverseMethod::kGram, InverseMethod::kRecursion}) {
    const BlockInverse inv =
        block_fisher_inverse(bank, make_blocks(layers, 6), {damp, method, 5}, keep);
    check_against_direct(inv, bank, damp, keep);
    for (int64_t b = 0; b < inv.num_blocks(); ++b) {
      const Block blk = inv.blocks()[b];
      const int64_t n = blk.size();
      const std::vector<float> a = inv.dense(b);
      for (int64_t i = 0; i < n; ++i) {
        if (keep[blk.begin + i] != 0.f) continue;
        for (int64_t j = 0; j < n; ++j)  // row of a masked weight: exactly e_i / λ
          CHECK(a[i * n + j] == (i == j ? static_cast<float>(1.0 / damp) : 0.f));
      }
    }
  }
}

TEST_CASE("relative damping: block b is damped with λ + r · mean of its Fisher diagonal") {
  const std::vector<int64_t> layers{7, 5};
  const GradientBank bank = random_bank(12, 9, 21);
  const double damp = 1e-3, r = 0.1;
  // One block per layer: the direct inverse with the λ_b computed here.
  const BlockInverse inv =
      block_fisher_inverse(bank, make_blocks(layers, 100), {damp, InverseMethod::kDirect, 32, r});
  for (int64_t b = 0; b < 2; ++b) {
    const Block blk = inv.blocks()[b];
    double mean = 0.0;
    for (int64_t i = 0; i < bank.rows(); ++i)
      for (int64_t q = blk.begin; q < blk.end; ++q) mean += std::pow(bank.row(i)[q], 2.0);
    mean /= static_cast<double>(bank.rows() * blk.size());
    CAPTURE(b);
    CHECK(inv.block_damp(b) == doctest::Approx(damp + r * mean).epsilon(1e-9));
    const ref::Mat want = ref::inverse(ref::fisher(bank.data(), bank.rows(), bank.dim(), blk.begin,
                                                   blk.size(), damp + r * mean, {}),
                                       blk.size());
    const std::vector<float> got = inv.dense(b);
    CHECK(ref::max_rel_err(got.data(), want.data(), blk.size() * blk.size()) < 1e-4);
  }
  CHECK(inv.raised_blocks().empty());  // relative damping is not a raised floor
}

TEST_CASE("no gradients: F⁻¹ = I / λ") {
  const GradientBank bank(6);
  const std::vector<int64_t> layers{6};
  const BlockInverse inv = block_fisher_inverse(bank, make_blocks(layers, 4), {0.5});
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t n = inv.blocks()[b].size();
    const std::vector<float> a = inv.dense(b);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) CHECK(a[i * n + j] == (i == j ? 2.f : 0.f));
  }
  CHECK(inv.diagonal() == std::vector<float>(6, 2.f));
}

TEST_CASE("parallel over blocks gives the same bits as one thread") {
  const int64_t d = 300;
  const std::vector<int64_t> layers{120, 180};
  for (int64_t m : {30, 6}) {  // dense blocks, then factored ones
    const GradientBank bank = random_bank(d, m, 9);
    set_num_threads(1);
    const BlockInverse one = block_fisher_inverse(bank, make_blocks(layers, 16), {1e-4});
    set_num_threads(2);
    const BlockInverse two = block_fisher_inverse(bank, make_blocks(layers, 16), {1e-4});
    REQUIRE(one.num_blocks() == two.num_blocks());
    CHECK(one.factored(0) == (m == 6));
    for (int64_t b = 0; b < one.num_blocks(); ++b) REQUIRE(one.dense(b) == two.dense(b));
    CHECK(one.diagonal() == two.diagonal());
    check_against_direct(two, bank, 1e-4);
  }
}

TEST_CASE("Auto picks the Gram form when m is small next to c, else the direct one") {
  CHECK(cheapest_method(100, 1000) == InverseMethod::kGram);
  CHECK(cheapest_method(1000, 100) == InverseMethod::kDirect);
  CHECK(cheapest_method(100, 100) == InverseMethod::kDirect);
  CHECK(cheapest_method(50, 100) == InverseMethod::kGram);
  CHECK(cheapest_method(51, 100) == InverseMethod::kDirect);
}

TEST_CASE("bad options and sizes are rejected") {
  const GradientBank bank = random_bank(8, 3, 1);
  const std::vector<int64_t> layers{8};
  CHECK_THROWS_AS(block_fisher_inverse(bank, make_blocks(layers, 4), {0.0}), UsageError);
  CHECK_THROWS_AS(
      block_fisher_inverse(bank, make_blocks(layers, 4), {1e-3, InverseMethod::kRecursion, 0}),
      UsageError);
  const std::vector<int64_t> wrong{7};
  CHECK_THROWS_AS(block_fisher_inverse(bank, make_blocks(wrong, 4), {1e-3}), UsageError);
  const std::vector<float> short_mask(5, 1.f);
  CHECK_THROWS_AS(block_fisher_inverse(bank, make_blocks(layers, 4), {1e-3}, short_mask),
                  UsageError);
}
