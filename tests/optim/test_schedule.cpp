// Learning-rate schedules at chosen steps against values worked out by hand
// from each closed form (PyTorch's StepLR, MultiStepLR, CosineAnnealingLR,
// LinearLR and OneCycleLR), and the factory's errors.
#include <doctest/doctest.h>

#include <string>

#include "core/error.h"
#include "optim/schedule.h"

using namespace spruce;
using namespace spruce::optim;
using doctest::Approx;

TEST_CASE("constant") {
  ConstantLr s(0.1);
  CHECK(s.lr_at(0) == 0.1);
  CHECK(s.lr_at(123456) == 0.1);
  CHECK_THROWS_AS(s.lr_at(-1), UsageError);
}

TEST_CASE("step: decay by gamma every step_size steps") {
  StepLr s(1.0, 3, 0.5);
  CHECK(s.lr_at(0) == 1.0);
  CHECK(s.lr_at(2) == 1.0);
  CHECK(s.lr_at(3) == 0.5);
  CHECK(s.lr_at(5) == 0.5);
  CHECK(s.lr_at(6) == 0.25);
  CHECK(s.lr_at(9) == 0.125);
}

TEST_CASE("multistep: a milestone applies from its own step on") {
  MultiStepLr s(1.0, {5, 2}, 0.1);  // unsorted on purpose
  CHECK(s.lr_at(0) == 1.0);
  CHECK(s.lr_at(1) == 1.0);
  CHECK(s.lr_at(2) == Approx(0.1));
  CHECK(s.lr_at(4) == Approx(0.1));
  CHECK(s.lr_at(5) == Approx(0.01));
  CHECK(s.lr_at(1000) == Approx(0.01));
}

TEST_CASE("cosine: half a cosine to min_lr, then flat") {
  CosineLr s(1.0, 4);
  CHECK(s.lr_at(0) == 1.0);
  CHECK(s.lr_at(1) == Approx(0.8535533905932737));  // (1 + cos(pi/4)) / 2
  CHECK(s.lr_at(2) == Approx(0.5));
  CHECK(s.lr_at(4) == Approx(0.0));
  CHECK(s.lr_at(10) == Approx(0.0));
  CosineLr m(1.0, 4, 0.1);
  CHECK(m.lr_at(2) == Approx(0.55));  // 0.1 + 0.9 * 0.5
  CHECK(m.lr_at(4) == Approx(0.1));
  CHECK(m.lr_at(100) == Approx(0.1));
}

TEST_CASE("warm-up scales the wrapped schedule linearly from start_factor to 1") {
  WarmupLr w(std::make_unique<ConstantLr>(1.0), 4, 0.2);
  CHECK(w.lr_at(0) == Approx(0.2));
  CHECK(w.lr_at(1) == Approx(0.4));
  CHECK(w.lr_at(2) == Approx(0.6));
  CHECK(w.lr_at(3) == Approx(0.8));
  CHECK(w.lr_at(4) == 1.0);
  CHECK(w.lr_at(50) == 1.0);

  // Around cosine the wrapped schedule keeps the global clock.
  ScheduleOptions o;
  o.lr = 1.0;
  o.total_steps = 8;
  o.warmup_steps = 2;
  o.warmup_start_factor = 0.5;
  auto s = make_schedule("cosine", o);
  CHECK(s->lr_at(0) == Approx(0.5));
  CHECK(s->lr_at(1) == Approx(0.7214548246917325));  // (1 + cos(pi/8)) / 2 * 0.75
  CHECK(s->lr_at(4) == Approx(0.5));
  CHECK(s->lr_at(8) == Approx(0.0));
}

TEST_CASE("one-cycle matches PyTorch's OneCycleLR (cos, two phases)") {
  // max 1, 100 steps, pct_start 0.25: initial 1/25 = 0.04, final 0.04 / 1e4;
  // phase 1 ends at 0.25 * 100 - 1 = 24, phase 2 at 99.
  OneCycleLr s(1.0, 100);
  CHECK(s.lr_at(0) == Approx(0.04));
  CHECK(s.lr_at(12) == Approx(0.52));  // halfway up: (0.04 + 1) / 2
  CHECK(s.lr_at(24) == Approx(1.0));
  CHECK(s.lr_at(49) == Approx(0.750001));  // p = 25/75, cos(pi/3) = 0.5
  CHECK(s.lr_at(99) == Approx(4e-6));
  CHECK(s.lr_at(100) == Approx(4e-6));  // past the end: stays final
  CHECK(s.lr_at(99) < s.lr_at(98));

  // A fractional phase end, as PyTorch computes it: 10 steps at 0.25 give
  // e1 = 1.5, so step 1 is 2/3 of the way up and step 2 is 0.5/7.5 down.
  OneCycleLr f(1.0, 10);
  CHECK(f.lr_at(0) == Approx(0.04));
  CHECK(f.lr_at(1) == Approx(0.76));  // 1 + (0.04 - 1) / 2 * (cos(2pi/3) + 1)
  CHECK(f.lr_at(2) == Approx(0.9890738440717014));
  CHECK(f.lr_at(3) == Approx(0.904508879153485));  // p = 1.5 / 7.5
  CHECK(f.lr_at(9) == Approx(4e-6));

  // PyTorch's own default pct_start 0.3: the peak at step 0.3 * 100 - 1 = 29.
  OneCycleLr p(0.5, 100, {.pct_start = 0.3});
  CHECK(p.lr_at(29) == Approx(0.5));
  CHECK(p.lr_at(28) < 0.5);
  CHECK(p.lr_at(30) < 0.5);
}

TEST_CASE("make_schedule builds by name and reports bad input") {
  ScheduleOptions o;
  o.lr = 0.4;
  o.total_steps = 100;
  CHECK(make_schedule("constant", o)->lr_at(7) == 0.4);
  CHECK(make_schedule("cosine", o)->lr_at(50) == Approx(0.2));
  CHECK(make_schedule("onecycle", o)->lr_at(0) == Approx(0.4 / 25));
  o.step_size = 10;
  o.gamma = 0.5;
  CHECK(make_schedule("step", o)->lr_at(25) == Approx(0.1));
  o.step_size = 0;
  o.milestones = {30, 60};
  CHECK(make_schedule("step", o)->lr_at(59) == Approx(0.2));
  CHECK(make_schedule("step", o)->lr_at(60) == Approx(0.1));

  auto msg = [](const std::string& name, const ScheduleOptions& opt) {
    try {
      make_schedule(name, opt);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(msg("cyclic", o) ==
        "unknown lr schedule 'cyclic' (known: constant, step, cosine, onecycle)");
  ScheduleOptions bad;
  CHECK(msg("cosine", bad).find("total_steps is 0") != std::string::npos);
  CHECK(msg("step", bad).find("needs step_size > 0 or milestones") != std::string::npos);
  bad.total_steps = 10;
  bad.warmup_steps = 2;
  CHECK(msg("onecycle", bad).find("own warm-up") != std::string::npos);
  bad.lr = -0.1;
  CHECK(msg("constant", bad).find("lr is -0.1") != std::string::npos);
}
