// The gradual (cubic) sparsity schedule: step times and targets.
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.h"
#include "pruning/schedule.h"

using namespace spruce;
using spruce::pruning::GradualSchedule;

TEST_CASE("span divisible by the frequency: targets follow the cubic") {
  GradualSchedule s{2, 10, 2, 0.05, 0.9};
  CHECK(s.steps() == std::vector<int64_t>{2, 4, 6, 8, 10});
  // s_t = 0.9 + (0.05 - 0.9) (1 - (t - 2) / 8)^3
  CHECK(s.target(2) == doctest::Approx(0.05));
  CHECK(s.target(4) == doctest::Approx(0.9 - 0.85 * 0.421875));  // (6/8)^3
  CHECK(s.target(6) == doctest::Approx(0.9 - 0.85 * 0.125));     // (4/8)^3
  CHECK(s.target(8) == doctest::Approx(0.9 - 0.85 * 0.015625));  // (2/8)^3
  CHECK(s.target(10) == 0.9);
  CHECK(s.target(0) == 0.05);
  CHECK(s.target(11) == 0.9);
  CHECK(s.is_step(6));
  CHECK_FALSE(s.is_step(5));
  CHECK_FALSE(s.is_step(12));
}

TEST_CASE("span not divisible by the frequency: the last step still reaches s_f") {
  GradualSchedule s{0, 10, 3, 0.0, 0.8};
  CHECK(s.steps() == std::vector<int64_t>{0, 3, 6, 9, 10});
  CHECK(s.target(9) == doctest::Approx(0.8 - 0.8 * 0.001));  // (1 - 9/10)^3
  CHECK(s.target(10) == 0.8);
  CHECK(s.is_step(10));
  // Targets rise monotonically over the steps.
  double last = -1;
  for (int64_t t : s.steps()) {
    CHECK(s.target(t) > last);
    last = s.target(t);
  }
}

TEST_CASE("a schedule of one step is one-shot pruning") {
  GradualSchedule s{5, 5, 1, 0.0, 0.95};
  CHECK(s.steps() == std::vector<int64_t>{5});
  CHECK(s.target(5) == 0.95);
  CHECK(s.target(4) == 0.0);
}

TEST_CASE("invalid schedules are rejected") {
  CHECK_THROWS_AS((GradualSchedule{5, 4, 1, 0, 0.5}.validate()), UsageError);
  CHECK_THROWS_AS((GradualSchedule{0, 4, 0, 0, 0.5}.validate()), UsageError);
  CHECK_THROWS_AS((GradualSchedule{0, 4, 1, 0.6, 0.5}.validate()), UsageError);
  CHECK_THROWS_AS((GradualSchedule{0, 4, 1, 0, 1.0}.validate()), UsageError);
}

TEST_CASE("any_step_in(begin, end) is whether steps() meets [begin, end), for every range") {
  for (const GradualSchedule s :
       {GradualSchedule{0, 10, 3, 0.0, 0.8}, GradualSchedule{2, 10, 2, 0.05, 0.9},
        GradualSchedule{4, 4, 1, 0.0, 0.5}, GradualSchedule{1, 8, 3, 0.2, 0.8}}) {
    const std::vector<int64_t> steps = s.steps();
    for (int64_t begin = 0; begin < 14; ++begin)
      for (int64_t end = begin; end < 15; ++end) {
        bool any = false;
        for (int64_t t : steps) any = any || (t >= begin && t < end);
        CAPTURE(begin);
        CAPTURE(end);
        CHECK(s.any_step_in(begin, end) == any);
      }
  }
}
