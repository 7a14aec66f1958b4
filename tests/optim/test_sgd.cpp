// SGD against updates computed by hand (PyTorch's torch.optim.SGD rules):
// plain, momentum, dampening, Nesterov, weight decay, parameters without a
// gradient, the post-step hook and the velocity state round trip. Values are
// chosen as short binary fractions, so most results are exact in float32.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "optim/sgd.h"

using namespace spruce;
using namespace spruce::optim;

namespace {

Tensor param(std::initializer_list<float> values) {
  Tensor t = Tensor::from_data({static_cast<int64_t>(values.size())}, values);
  t.set_requires_grad(true);
  return t;
}

void set_grad(Tensor& p, std::initializer_list<float> values) {
  p.set_grad(Tensor::from_data(p.shape(), values));
}

}  // namespace

TEST_CASE("plain SGD: w -= lr * g") {
  Tensor w = param({1.f, -2.f});
  Sgd opt({{"w", w}}, {.lr = 0.5});
  set_grad(w, {0.5f, 1.f});
  opt.step();
  CHECK(w.at(0) == 0.75f);
  CHECK(w.at(1) == -2.5f);
  set_grad(w, {1.f, -1.f});
  opt.step();
  CHECK(w.at(0) == 0.25f);
  CHECK(w.at(1) == -2.f);
  CHECK(!opt.velocity("w").defined());  // no momentum, no buffer
  CHECK(opt.state().empty());
  CHECK(opt.steps() == 2);
}

TEST_CASE("momentum: buf = g on the first step, then momentum * buf + g") {
  Tensor w = param({1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5});
  set_grad(w, {1.f});
  opt.step();  // buf 1, w 1 - 0.5
  CHECK(opt.velocity("w").at(0) == 1.f);
  CHECK(w.at(0) == 0.5f);
  opt.step();  // buf 0.5 + 1 = 1.5, w 0.5 - 0.75
  CHECK(opt.velocity("w").at(0) == 1.5f);
  CHECK(w.at(0) == -0.25f);
  set_grad(w, {-2.f});
  opt.step();  // buf 0.75 - 2 = -1.25, w -0.25 + 0.625
  CHECK(opt.velocity("w").at(0) == -1.25f);
  CHECK(w.at(0) == 0.375f);
}

TEST_CASE("momentum with a non-binary lr (0.1, 0.9)") {
  Tensor w = param({1.f});
  Sgd opt({{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  set_grad(w, {1.f});
  opt.step();  // buf 1, w 0.9
  opt.step();  // buf 1.9, w 0.71
  opt.step();  // buf 2.71, w 0.439
  CHECK(opt.velocity("w").at(0) == doctest::Approx(2.71).epsilon(1e-6));
  CHECK(w.at(0) == doctest::Approx(0.439).epsilon(1e-6));
}

TEST_CASE("dampening scales the gradient after the first step only") {
  Tensor w = param({1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5, .dampening = 0.5});
  set_grad(w, {1.f});
  opt.step();  // buf 1 (no dampening on the first step), w 0.5
  CHECK(w.at(0) == 0.5f);
  opt.step();  // buf 0.5 + 0.5 * 1 = 1, w 0
  CHECK(opt.velocity("w").at(0) == 1.f);
  CHECK(w.at(0) == 0.f);
}

TEST_CASE("Nesterov: g = g + momentum * buf") {
  Tensor w = param({1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5, .nesterov = true});
  set_grad(w, {1.f});
  opt.step();  // buf 1, g 1.5, w 0.25
  CHECK(opt.velocity("w").at(0) == 1.f);
  CHECK(w.at(0) == 0.25f);
  opt.step();  // buf 1.5, g 1.75, w -0.625
  CHECK(opt.velocity("w").at(0) == 1.5f);
  CHECK(w.at(0) == -0.625f);
  set_grad(w, {-2.f});
  opt.step();  // buf -1.25, g -2.625, w 0.6875
  CHECK(opt.velocity("w").at(0) == -1.25f);
  CHECK(w.at(0) == 0.6875f);
}

TEST_CASE("weight decay adds wd * w to the gradient") {
  SUBCASE("without momentum") {
    Tensor w = param({2.f});
    Sgd opt({{"w", w}}, {.lr = 0.5, .weight_decay = 0.5});
    set_grad(w, {1.f});
    opt.step();  // g 1 + 1 = 2, w 1
    CHECK(w.at(0) == 1.f);
    opt.step();  // g 1 + 0.5, w 0.25
    CHECK(w.at(0) == 0.25f);
  }
  SUBCASE("with momentum, decay enters the buffer") {
    Tensor w = param({2.f});
    Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.5});
    set_grad(w, {1.f});
    opt.step();  // g 2, buf 2, w 1
    CHECK(opt.velocity("w").at(0) == 2.f);
    CHECK(w.at(0) == 1.f);
    set_grad(w, {0.f});
    opt.step();  // g 0.5, buf 1.5, w 0.25
    CHECK(opt.velocity("w").at(0) == 1.5f);
    CHECK(w.at(0) == 0.25f);
    opt.step();  // g 0.125, buf 0.875, w -0.1875
    CHECK(opt.velocity("w").at(0) == 0.875f);
    CHECK(w.at(0) == -0.1875f);
  }
}

TEST_CASE("parameters without a gradient are untouched") {
  Tensor a = param({1.f});
  Tensor b = param({5.f, 6.f});
  Sgd opt({{"a", a}, {"b", b}}, {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.5});
  set_grad(a, {1.f});
  opt.step();
  CHECK(a.at(0) == 0.25f);  // g 1 + 0.5 * 1, buf 1.5, w 1 - 0.75
  CHECK(b.at(0) == 5.f);
  CHECK(b.at(1) == 6.f);
  CHECK(!opt.velocity("b").defined());
  const auto st = opt.state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].first == "a");

  // After zero_grad nothing moves, and the velocity is kept.
  opt.zero_grad();
  CHECK(!a.grad().defined());
  opt.step();
  CHECK(a.at(0) == 0.25f);
  CHECK(opt.velocity("a").at(0) == 1.5f);
}

TEST_CASE("large parameters (parallel path) follow the same rule") {
  const int64_t n = 100003;
  Tensor w = Tensor::full({n}, 1.f);
  w.set_requires_grad(true);
  Tensor g = Tensor::empty({n});
  for (int64_t k = 0; k < n; ++k) g.data()[k] = static_cast<float>(k % 7) - 3.f;
  w.set_grad(g);
  Sgd opt({{"w", w}}, {.lr = 0.25, .momentum = 0.5, .nesterov = true});
  opt.step();  // buf g, w 1 - 0.25 * 1.5 g
  opt.step();  // buf 1.5 g, w - 0.25 * 1.75 g
  bool ok = true;
  for (int64_t k = 0; k < n; ++k) {
    const float gk = g.data()[k];
    ok = ok && w.data()[k] == 1.f - 0.375f * gk - 0.4375f * gk;
  }
  CHECK(ok);
}

TEST_CASE("post-step hooks run after every step and can keep entries masked") {
  Tensor w = param({1.f, 1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5});
  int calls = 0;
  // What the pruning module does: entry 0 is pruned in weights and momentum.
  opt.add_post_step_hook([&](Sgd& o) {
    ++calls;
    w.data()[0] = 0.f;
    o.velocity("w").data()[0] = 0.f;
  });
  set_grad(w, {1.f, 1.f});
  opt.step();
  opt.step();
  CHECK(calls == 2);
  CHECK(w.at(0) == 0.f);
  CHECK(opt.velocity("w").at(0) == 0.f);
  CHECK(w.at(1) == -0.25f);  // the unmasked entry follows the momentum rule
}

TEST_CASE("masks keep masked weights and their momentum at +0, and see later changes") {
  Tensor w = param({1.f, -1.f, 1.f});
  Tensor mask = Tensor::from_data({3}, {1.f, 0.f, 1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.25});
  opt.set_masks({{"w", mask}});
  set_grad(w, {1.f, -1.f, 1.f});  // masked entry: a negative velocity, -0 if multiplied by 0
  opt.step();
  CHECK(w.at(1) == 0.f);
  CHECK(!std::signbit(w.at(1)));
  CHECK(opt.velocity("w").at(1) == 0.f);
  CHECK(!std::signbit(opt.velocity("w").at(1)));
  // Unmasked: g = 1 + 0.25 = 1.25, buf = g, w = 1 - 0.625.
  CHECK(w.at(0) == 0.375f);
  CHECK(opt.velocity("w").at(0) == 1.25f);
  // The mask is a handle: pruning entry 2 between steps is seen by
  // apply_masks() at once, with no step needed.
  mask.data()[2] = 0.f;
  opt.apply_masks();
  CHECK(w.at(2) == 0.f);
  CHECK(opt.velocity("w").at(2) == 0.f);
  CHECK(w.at(0) == 0.375f);
  // An empty list removes the masks.
  opt.set_masks({});
  opt.step();
  CHECK(w.at(1) != 0.f);
}

TEST_CASE("set_masks rejects unknown names and wrong sizes") {
  Tensor w = param({1.f, 1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5});
  CHECK_THROWS_AS(opt.set_masks({{"v", Tensor::ones({2})}}), UsageError);
  CHECK_THROWS_AS(opt.set_masks({{"w", Tensor::ones({3})}}), UsageError);
  CHECK_THROWS_AS(opt.set_masks({{"w", Tensor()}}), UsageError);
}

TEST_CASE("reset_momentum drops the buffers: the next step starts afresh") {
  Tensor w = param({1.f});
  Sgd opt({{"w", w}}, {.lr = 0.5, .momentum = 0.5, .dampening = 0.5});
  set_grad(w, {1.f});
  opt.step();  // buf 1, w 0.5
  opt.reset_momentum();
  CHECK(!opt.velocity("w").defined());
  CHECK(opt.state().empty());
  opt.step();  // a first step again: buf = g = 1 (no momentum, no dampening), w 0.5 - 0.5
  CHECK(opt.velocity("w").at(0) == 1.f);
  CHECK(w.at(0) == 0.f);
}

TEST_CASE("state round trip continues the run identically") {
  Tensor a1 = param({1.f, 2.f});
  Tensor b1 = param({3.f});
  Sgd opt1({{"a", a1}, {"b", b1}}, {.lr = 0.1, .momentum = 0.9});
  set_grad(a1, {0.3f, -0.7f});
  set_grad(b1, {1.1f});
  opt1.step();
  opt1.step();

  Tensor a2 = a1.clone().set_requires_grad(true);
  Tensor b2 = b1.clone().set_requires_grad(true);
  Sgd opt2({{"a", a2}, {"b", b2}}, {.lr = 0.1, .momentum = 0.9});
  NamedTensors saved;
  for (const auto& [name, v] : opt1.state()) saved.emplace_back(name, v.clone());
  opt2.load_state(saved, opt1.steps());
  CHECK(opt2.steps() == 2);
  CHECK(!opt2.velocity("a").shares_storage_with(saved[0].second));

  set_grad(a2, {0.3f, -0.7f});
  set_grad(b2, {1.1f});
  opt1.step();
  opt2.step();
  CHECK(a1.at(0) == a2.at(0));
  CHECK(a1.at(1) == a2.at(1));
  CHECK(b1.at(0) == b2.at(0));
}

TEST_CASE("load_state rejects unknown names and wrong shapes") {
  Tensor w = param({1.f, 2.f});
  Sgd opt({{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  auto msg = [&](const NamedTensors& st) {
    try {
      opt.load_state(st, 0, "run.ckpt");
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(msg({{"v", Tensor::zeros({2})}}).find("run.ckpt: velocity for unknown parameter 'v'") == 0);
  CHECK(msg({{"w", Tensor::zeros({3})}}).find("has shape [3], parameter has [2]") !=
        std::string::npos);
  CHECK(!opt.velocity("w").defined());  // a rejected state changes nothing
}

TEST_CASE("invalid options and parameter lists are usage errors") {
  Tensor w = param({1.f});
  CHECK_THROWS_AS(Sgd({{"w", w}}, {.lr = -1.0}), UsageError);
  CHECK_THROWS_AS(Sgd({{"w", w}}, {.lr = 0.1, .nesterov = true}), UsageError);
  CHECK_THROWS_AS(Sgd({{"w", w}}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                  UsageError);
  CHECK_THROWS_AS(Sgd({{"w", w}, {"w", w}}, {}), UsageError);
  CHECK_THROWS_AS(Sgd({{"u", Tensor()}}, {}), UsageError);
  Sgd opt({{"w", w}}, {});
  CHECK_THROWS_AS(opt.velocity("nope"), UsageError);
  opt.set_lr(0.05);
  CHECK(opt.lr() == 0.05);
}
