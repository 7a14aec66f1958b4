// OBS in its own setting: a quadratic loss L(w + δ) − L(w) = ½ δᵀHδ with a
// known positive-definite H, and gradients chosen so that λI + (1/m) Σ g gᵀ
// is exactly H. Then ρ, the exact multi-weight update and its predicted loss
// must equal the brute-force constrained minimum (the KKT system, in double).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/random.h"
#include "pruning/prune_step.h"
#include "pruning/woodfisher_pruner.h"
#include "reference.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

constexpr int64_t kD = 6, kM = 9;  // √m = 3: g = 3·R is exact in float
constexpr double kDamp = 0.25;

/// R (d×m) with entries in {−½, −¼, 0, ¼, ½}, or a diagonal one.
std::vector<double> factor(bool diagonal) {
  std::vector<double> r(kD * kM, 0.0);
  for (int64_t i = 0; i < kD; ++i)
    for (int64_t j = 0; j < kM; ++j)
      r[i * kM + j] = diagonal ? (i == j ? (i + 1) / 4.0 : 0.0) : ((i * 7 + j * 3) % 5 - 2) / 4.0;
  return r;
}

/// H = λI + RRᵀ, and the bank whose Fisher is H: g_j = √m R[:, j].
struct Problem {
  ref::Mat h;
  GradientBank bank{kD};
  explicit Problem(bool diagonal) : h(kD * kD, 0.0) {
    const std::vector<double> r = factor(diagonal);
    for (int64_t i = 0; i < kD; ++i)
      for (int64_t k = 0; k < kD; ++k) {
        for (int64_t j = 0; j < kM; ++j) h[i * kD + k] += r[i * kM + j] * r[k * kM + j];
        if (i == k) h[i * kD + k] += kDamp;
      }
    for (int64_t j = 0; j < kM; ++j) {
      std::vector<float> g(kD);
      for (int64_t i = 0; i < kD; ++i) g[i] = static_cast<float>(3.0 * r[i * kM + j]);
      bank.add(g);
    }
  }
};

const std::vector<float> kW{0.9f, -0.4f, 0.3f, 1.2f, -0.7f, 0.15f};

PrunableSet make_set(const std::vector<float>& w) {
  PrunableSet set;
  set.add("w", Tensor::from_data({static_cast<int64_t>(w.size())}, w));
  return set;
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

/// Applies `pruner`'s update for Q to a fresh set holding kW; returns δ and the prediction.
std::vector<double> apply(WoodFisherPruner& pruner, const GradientBank& bank,
                          const std::vector<int64_t>& q, LossPrediction* loss = nullptr,
                          int64_t block = 100, double taylor_scale = 1.0) {
  PrunableSet set = make_set(kW);
  FisherOptions fisher{kDamp, block};
  fisher.taylor_scale = taylor_scale;
  pruner.prepare(set, &bank, fisher);
  const LossPrediction l = pruner.update(set, q);
  if (loss) *loss = l;
  const std::vector<float> after = set.flat_weights();
  std::vector<double> delta(after.size());
  for (size_t i = 0; i < after.size(); ++i) delta[i] = static_cast<double>(after[i]) - kW[i];
  return delta;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0.0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(a[i] - b[i]));
  return e;
}

/// Every way of computing the block inverse: the OBS results must not depend on it.
const InverseMethod kMethods[] = {InverseMethod::kDirect, InverseMethod::kGram,
                                  InverseMethod::kRecursion};

WoodFisherOptions with(InverseMethod method, ObsUpdate update = ObsUpdate::kExact,
                       double scale = 1.0) {
  WoodFisherOptions o;
  o.update = update;
  o.update_scale = scale;
  o.method = method;
  o.chunk = 4;
  return o;
}

}  // namespace

TEST_CASE(
    "ρ_q is the brute-force minimum loss of removing w_q, and the one-weight update its "
    "minimiser") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const Problem p(false);
    WoodFisherPruner pruner(with(method));
    PrunableSet set = make_set(kW);
    pruner.prepare(set, &p.bank, {kDamp, 100});
    const std::vector<double> rho = pruner.scores(set);
    for (int64_t q = 0; q < kD; ++q) {
      CAPTURE(q);
      const std::vector<double> best = ref::constrained_minimiser(p.h, kD, as_double(kW), {q});
      const double min_loss = ref::quadratic(p.h, kD, best);
      CHECK(rho[q] == doctest::Approx(min_loss).epsilon(1e-5));
      LossPrediction loss;
      const std::vector<double> delta = apply(pruner, p.bank, {q}, &loss);
      CHECK(max_abs_diff(delta, best) < 1e-5);
      CHECK(loss.predicted[0] == doctest::Approx(min_loss).epsilon(1e-5));
    }
  }
}

TEST_CASE("exact multi-weight update = the KKT minimiser; predicted loss = ½ δᵀHδ of it") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const Problem p(false);
    const std::vector<int64_t> q{1, 3, 4};
    const std::vector<double> best = ref::constrained_minimiser(p.h, kD, as_double(kW), q);
    WoodFisherPruner pruner(with(method));
    LossPrediction loss;
    const std::vector<double> delta = apply(pruner, p.bank, q, &loss);
    CHECK(max_abs_diff(delta, best) < 1e-5);
    for (int64_t i : q) CHECK(kW[i] + delta[i] == 0.0);  // pruned entries exactly zero
    const double applied = ref::quadratic(p.h, kD, delta);
    CHECK(loss.predicted[0] == doctest::Approx(applied).epsilon(1e-5));
    CHECK(loss.quadratic[0] == doctest::Approx(applied).epsilon(1e-5));
  }
}

TEST_CASE("summed single-weight updates differ from the exact one when H is not diagonal") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const Problem p(false);
    const std::vector<int64_t> q{1, 3, 4};
    const std::vector<double> best = ref::constrained_minimiser(p.h, kD, as_double(kW), q);
    WoodFisherPruner summed(with(method, ObsUpdate::kSummed));
    LossPrediction loss;
    const std::vector<double> delta = apply(summed, p.bank, q, &loss);
    CHECK(max_abs_diff(delta, best) > 1e-2);
    for (int64_t i : q) CHECK(kW[i] + delta[i] == 0.0);
    // Reported as the reference would: Σ ρ_q; and the quadratic model of what was applied.
    PrunableSet set = make_set(kW);
    summed.prepare(set, &p.bank, {kDamp, 100});
    const std::vector<double> rho = summed.scores(set);
    CHECK(loss.predicted[0] == doctest::Approx(rho[1] + rho[3] + rho[4]).epsilon(1e-6));
    CHECK(loss.quadratic[0] == doctest::Approx(ref::quadratic(p.h, kD, delta)).epsilon(1e-5));
    // The exact update is the constrained optimum: the summed one costs more.
    CHECK(ref::quadratic(p.h, kD, delta) > ref::quadratic(p.h, kD, best) + 1e-3);
  }
}

TEST_CASE("with a diagonal H the summed and exact updates agree (both just zero Q)") {
  const Problem p(true);
  const std::vector<int64_t> q{0, 2, 5};
  WoodFisherPruner exact, summed({ObsUpdate::kSummed, 1.0});
  const std::vector<double> a = apply(exact, p.bank, q), b = apply(summed, p.bank, q);
  CHECK(max_abs_diff(a, b) < 1e-6);
  CHECK(max_abs_diff(a, ref::constrained_minimiser(p.h, kD, as_double(kW), q)) < 1e-6);
}

TEST_CASE("summed with scale 0 only zeroes: OBD") {
  const Problem p(false);
  const std::vector<int64_t> q{0, 4};
  WoodFisherPruner obd({ObsUpdate::kSummed, 0.0});
  LossPrediction loss;
  const std::vector<double> delta = apply(obd, p.bank, q, &loss);
  for (int64_t i = 0; i < kD; ++i) CHECK(delta[i] == (i == 0 || i == 4 ? -kW[i] : 0.0));
  CHECK(loss.quadratic[0] == doctest::Approx(ref::quadratic(p.h, kD, delta)).epsilon(1e-5));
}

TEST_CASE("update scale s in [0, 1]: the unpruned weights move s times the full update") {
  const Problem p(false);
  const std::vector<int64_t> q{1, 3};
  for (ObsUpdate update : {ObsUpdate::kExact, ObsUpdate::kSummed}) {
    CAPTURE(static_cast<int>(update));
    WoodFisherPruner full({update, 1.0}), half({update, 0.5}), none({update, 0.0});
    const std::vector<double> d_full = apply(full, p.bank, q);
    const std::vector<double> d_half = apply(half, p.bank, q);
    const std::vector<double> d_none = apply(none, p.bank, q);
    for (int64_t i = 0; i < kD; ++i) {
      CAPTURE(i);
      if (i == 1 || i == 3) {  // pruned: exactly zero whatever the scale
        CHECK(d_half[i] == -static_cast<double>(kW[i]));
        CHECK(d_none[i] == -static_cast<double>(kW[i]));
      } else {
        CHECK(d_full[i] != 0.0);
        CHECK(d_half[i] == doctest::Approx(0.5 * d_full[i]).epsilon(1e-5));
        CHECK(d_none[i] == 0.0);
      }
    }
  }
}

TEST_CASE("with several blocks the exact update is the KKT minimiser of each block's Fisher") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const std::vector<int64_t> layers{5, 7};  // c = 3: [0,3) [3,5) [5,8) [8,11) [11,12)
    const int64_t d = 12, m = 8;
    const double damp = 0.1;
    Generator gen(4);
    GradientBank bank(d);
    for (int64_t s = 0; s < m; ++s) {
      std::vector<float> g(d);
      for (auto& v : g) v = gen.normal();
      bank.add(g);
    }
    std::vector<float> w(d);
    for (auto& v : w) v = gen.normal();
    PrunableSet set;
    set.add("a", Tensor::from_data({5}, std::vector<float>(w.begin(), w.begin() + 5)));
    set.add("b", Tensor::from_data({7}, std::vector<float>(w.begin() + 5, w.end())));
    const std::vector<int64_t> q{0, 2, 4, 6, 7, 9, 11};
    WoodFisherPruner pruner(with(method));
    pruner.prepare(set, &bank, {damp, 3});
    const LossPrediction loss = pruner.update(set, q);
    const std::vector<float> after = set.flat_weights();
    double total = 0.0, layer0 = 0.0;
    for (const Block& blk : make_blocks(layers, 3)) {
      const int64_t n = blk.size();
      const ref::Mat f = ref::fisher(bank.data(), m, d, blk.begin, n, damp);
      std::vector<double> wb(w.begin() + blk.begin, w.begin() + blk.end);
      std::vector<int64_t> qb;
      for (int64_t i : q)
        if (i >= blk.begin && i < blk.end) qb.push_back(i - blk.begin);
      const std::vector<double> best = ref::constrained_minimiser(f, n, wb, qb);
      for (int64_t j = 0; j < n; ++j)
        CHECK(after[blk.begin + j] == doctest::Approx(w[blk.begin + j] + best[j]).epsilon(1e-5));
      total += ref::quadratic(f, n, best);
      if (blk.layer == 0) layer0 += ref::quadratic(f, n, best);
    }
    CHECK(loss.predicted[0] == doctest::Approx(layer0).epsilon(1e-5));
    CHECK(loss.predicted[0] + loss.predicted[1] == doctest::Approx(total).epsilon(1e-5));
    CHECK(loss.quadratic[0] + loss.quadratic[1] == doctest::Approx(total).epsilon(1e-5));
  }
}

TEST_CASE("few gradients, many pruned: the exact update is still the KKT minimiser") {
  const int64_t d = 12, m = 3;  // factored blocks solve A_QQ through an m×m system when q > m
  const double damp = 0.2;
  Generator gen(8);
  GradientBank bank(d);
  for (int64_t s = 0; s < m; ++s) {
    std::vector<float> g(d);
    for (auto& v : g) v = gen.normal();
    bank.add(g);
  }
  std::vector<float> w(d);
  for (auto& v : w) v = gen.normal();
  const std::vector<int64_t> q{0, 1, 3, 4, 6, 8, 9, 11};
  const ref::Mat f = ref::fisher(bank.data(), m, d, 0, d, damp);
  const std::vector<double> best = ref::constrained_minimiser(f, d, as_double(w), q);
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    PrunableSet set;
    set.add("w", Tensor::from_data({d}, w));
    WoodFisherPruner pruner(with(method));
    pruner.prepare(set, &bank, {damp, d});
    CHECK(pruner.inverse().factored(0) == (method == InverseMethod::kGram));
    const LossPrediction loss = pruner.update(set, q);
    const std::vector<float> after = set.flat_weights();
    for (int64_t i = 0; i < d; ++i)
      CHECK(after[i] == doctest::Approx(w[i] + best[i]).epsilon(1e-5));
    CHECK(loss.predicted[0] == doctest::Approx(ref::quadratic(f, d, best)).epsilon(1e-5));
  }
}

TEST_CASE("already-pruned weights stay zero; the update is the minimiser of the masked Fisher") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const int64_t d = 8, m = 10;
    const double damp = 0.05;
    Generator gen(12);
    GradientBank bank(d);  // deliberately not masked: prepare() must mask it
    for (int64_t s = 0; s < m; ++s) {
      std::vector<float> g(d);
      for (auto& v : g) v = gen.normal();
      bank.add(g);
    }
    std::vector<float> w{0.8f, -1.1f, 0.f, 0.05f, 0.6f, -0.2f, 0.f, 1.4f};
    std::vector<float> mask{1, 1, 0, 1, 1, 1, 0, 1};
    PrunableSet set;
    set.add("w", Tensor::from_data({d}, w), Tensor::from_data({d}, mask));
    WoodFisherPruner pruner(with(method));
    const PruneReport r = prune_step(pruner, set, &bank, {0.5, Selection::kGlobal, {damp, 8}});
    CHECK(r.pruned_before == 2);
    CHECK(r.pruned_after == 4);
    const std::vector<float> after = set.flat_weights(), new_mask = set.flat_mask();
    CHECK(after[2] == 0.f);
    CHECK(after[6] == 0.f);
    CHECK(new_mask[2] == 0.f);
    CHECK(new_mask[6] == 0.f);
    // Which two were chosen: the lowest ρ under the masked Fisher.
    const ref::Mat f = ref::fisher(bank.data(), m, d, 0, d, damp, mask);
    const ref::Mat finv = ref::inverse(f, d);
    std::vector<int64_t> order;
    for (int64_t i = 0; i < d; ++i)
      if (mask[i] != 0.f) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return w[a] * w[a] / finv[a * d + a] < w[b] * w[b] / finv[b * d + b];
    });
    std::vector<int64_t> q{order[0], order[1]};
    std::sort(q.begin(), q.end());
    for (int64_t i : q) CHECK(new_mask[i] == 0.f);
    const std::vector<double> best = ref::constrained_minimiser(f, d, as_double(w), q);
    for (int64_t i = 0; i < d; ++i)
      CHECK(after[i] == doctest::Approx(w[i] + best[i]).epsilon(1e-5));
    CHECK(r.predicted_loss == doctest::Approx(ref::quadratic(f, d, best)).epsilon(1e-5));
    CHECK(r.quadratic_loss == doctest::Approx(r.predicted_loss).epsilon(1e-5));
  }
}

// WoodTaylor: the same quadratic with the linear term of the mean gradient ḡ
// of the bank's rows, L(w + δ) − L(w) = ḡᵀδ + ½ δᵀHδ. Its brute-force answer
// is the KKT system with right-hand side [−ḡ; −w_Q].
namespace {

std::vector<double> mean_gradient(const GradientBank& bank) {
  std::vector<double> g(static_cast<size_t>(bank.dim()), 0.0);
  for (int64_t i = 0; i < bank.rows(); ++i)
    for (int64_t q = 0; q < bank.dim(); ++q) g[q] += bank.row(i)[q];
  for (double& v : g) v /= static_cast<double>(bank.rows());
  return g;
}

/// H with the entries between blocks of `block` weights zeroed: the Fisher
/// the pruner uses when it splits the weights into such blocks.
ref::Mat block_diagonal(const ref::Mat& h, int64_t n, int64_t block) {
  ref::Mat out = h;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      if (i / block != j / block) out[i * n + j] = 0.0;
  return out;
}

WoodFisherOptions taylor(InverseMethod method, ObsUpdate update = ObsUpdate::kExact,
                         double scale = 1.0) {
  WoodFisherOptions o = with(method, update, scale);
  o.first_order = true;
  return o;
}

}  // namespace

TEST_CASE(
    "WoodTaylor: ρ_q − ½ ḡᵀH⁻¹ḡ is the brute-force minimum of removing w_q, the smallest ρ "
    "the best single weight, and the one-weight update its minimiser") {
  for (InverseMethod method : kMethods) {
    CAPTURE(static_cast<int>(method));
    const Problem p(false);
    const std::vector<double> g = mean_gradient(p.bank);
    const std::vector<double> newton = ref::solve(p.h, g, kD);  // H⁻¹ḡ
    double newton_gain = 0.0;
    for (int64_t i = 0; i < kD; ++i) newton_gain += 0.5 * g[i] * newton[i];
    REQUIRE(newton_gain > 1e-3);  // the first-order term matters here
    WoodFisherPruner pruner(taylor(method));
    CHECK(pruner.name() == "woodtaylor");
    PrunableSet set = make_set(kW);
    pruner.prepare(set, &p.bank, {kDamp, 100});
    const std::vector<double> rho = pruner.scores(set);
    int64_t best_q = -1;
    double best_loss = 0.0;
    for (int64_t q = 0; q < kD; ++q) {
      CAPTURE(q);
      const std::vector<double> best = ref::constrained_minimiser(p.h, kD, as_double(kW), {q}, g);
      const double min_loss = ref::taylor(p.h, g, kD, best);
      if (best_q < 0 || min_loss < best_loss) best_q = q, best_loss = min_loss;
      CHECK(rho[q] - newton_gain == doctest::Approx(min_loss).epsilon(1e-5));
      LossPrediction loss;
      const std::vector<double> delta = apply(pruner, p.bank, {q}, &loss);
      CHECK(max_abs_diff(delta, best) < 1e-5);
      CHECK(loss.predicted[0] == doctest::Approx(min_loss).epsilon(1e-5));
      CHECK(loss.quadratic[0] == doctest::Approx(min_loss).epsilon(1e-5));
    }
    CHECK(std::min_element(rho.begin(), rho.end()) - rho.begin() == best_q);
    // Without the first-order term the ranking differs on this problem.
    WoodFisherPruner plain(with(method));
    plain.prepare(set, &p.bank, {kDamp, 100});
    const std::vector<double> rho0 = plain.scores(set);
    auto ranking = [](const std::vector<double>& r) {
      std::vector<int64_t> order(r.size());
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return r[x] < r[y]; });
      return order;
    };
    CHECK(ranking(rho) != ranking(rho0));
  }
}

TEST_CASE(
    "WoodTaylor exact multi-weight update = the KKT minimiser with ḡ, in one block and in "
    "several (a block with nothing pruned still takes its Newton step)") {
  for (InverseMethod method : kMethods) {
    for (int64_t block : {int64_t{100}, int64_t{3}}) {
      CAPTURE(static_cast<int>(method));
      CAPTURE(block);
      const Problem p(false);
      const std::vector<double> g = mean_gradient(p.bank);
      const ref::Mat h = block_diagonal(p.h, kD, block);
      const std::vector<int64_t> q{0, 2};  // both in the first block of 3
      const std::vector<double> best = ref::constrained_minimiser(h, kD, as_double(kW), q, g);
      WoodFisherPruner pruner(taylor(method));
      LossPrediction loss;
      const std::vector<double> delta = apply(pruner, p.bank, q, &loss, block);
      CHECK(max_abs_diff(delta, best) < 1e-5);
      for (int64_t i : q) CHECK(kW[i] + delta[i] == 0.0);
      double predicted = 0.0, quadratic = 0.0;
      for (size_t l = 0; l < loss.predicted.size(); ++l)
        predicted += loss.predicted[l], quadratic += loss.quadratic[l];
      CHECK(predicted == doctest::Approx(ref::taylor(h, g, kD, best)).epsilon(1e-5));
      CHECK(quadratic == doctest::Approx(ref::taylor(h, g, kD, delta)).epsilon(1e-5));
      if (block == 3) CHECK(std::fabs(delta[4]) > 1e-3);  // the second block moved
    }
  }
}

TEST_CASE("WoodTaylor summed: s · (Newton step + the single-weight OBS updates of w − H⁻¹ḡ)") {
  const Problem p(false);
  const std::vector<double> g = mean_gradient(p.bank);
  const ref::Mat a = ref::inverse(p.h, kD);
  const std::vector<double> newton = ref::solve(p.h, g, kD);
  const std::vector<int64_t> q{1, 3};
  std::vector<double> full(kD);
  for (int64_t i = 0; i < kD; ++i) full[i] = -newton[i];
  for (int64_t j : q) {
    const double u = kW[j] - newton[j];
    for (int64_t i = 0; i < kD; ++i) full[i] -= a[i * kD + j] * u / a[j * kD + j];
  }
  for (double scale : {1.0, 0.5}) {
    CAPTURE(scale);
    WoodFisherPruner pruner(taylor(InverseMethod::kDirect, ObsUpdate::kSummed, scale));
    const std::vector<double> delta = apply(pruner, p.bank, q);
    for (int64_t i = 0; i < kD; ++i) {
      CAPTURE(i);
      if (i == 1 || i == 3)
        CHECK(delta[i] == -static_cast<double>(kW[i]));
      else
        CHECK(delta[i] == doctest::Approx(scale * full[i]).epsilon(1e-5));
    }
  }
}

TEST_CASE("WoodTaylor with --taylor-scale t: the KKT minimiser with t·ḡ; t = 0 is WoodFisher") {
  const Problem p(false);
  const std::vector<double> g = mean_gradient(p.bank);
  const std::vector<int64_t> q{0, 2};
  for (double t : {0.0, 0.25}) {
    CAPTURE(t);
    std::vector<double> tg(g);
    for (double& v : tg) v *= t;
    const std::vector<double> best = ref::constrained_minimiser(p.h, kD, as_double(kW), q, tg);
    WoodFisherPruner pruner(taylor(InverseMethod::kDirect));
    LossPrediction loss;
    const std::vector<double> delta = apply(pruner, p.bank, q, &loss, 100, t);
    CHECK(max_abs_diff(delta, best) < 1e-5);
    CHECK(loss.predicted[0] == doctest::Approx(ref::taylor(p.h, tg, kD, best)).epsilon(1e-5));
    if (t == 0.0) {
      WoodFisherPruner plain(with(InverseMethod::kDirect));
      CHECK(max_abs_diff(apply(plain, p.bank, q), delta) == 0.0);
    }
  }
}
