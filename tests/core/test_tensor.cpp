// Tensor creation, views, copies, the reuse of big freed buffers and the
// random generator.
#include <doctest/doctest.h>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"

using namespace spruce;

TEST_CASE("creation fills values and shapes") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.dim() == 2);
  CHECK(z.size(-1) == 3);
  for (float v : z.span()) CHECK(v == 0.f);
  Tensor f = Tensor::full({4}, 2.5f);
  CHECK(f.at(3) == 2.5f);
  Tensor d = Tensor::from_data({2, 2}, {1, 2, 3, 4});
  CHECK(d.at(2) == 3.f);
  CHECK_THROWS_AS(Tensor::from_data({3}, {1, 2}), UsageError);
  CHECK(Tensor::full({}, 7.f).item() == 7.f);
  CHECK_THROWS_AS(d.item(), UsageError);
  CHECK(shape_str({2, 3, 4}) == "[2, 3, 4]");
}

TEST_CASE("storage is 64-byte aligned") {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::empty({n});
    CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  }
}

TEST_CASE("big freed buffers serve later requests of the same or a somewhat smaller size") {
  // Sizes unlike any other test's, so no block cached before can match.
  const int64_t big = (int64_t{3} << 20) + 123;  // floats: ~12 MiB
  const float* first = nullptr;
  {
    Tensor t = Tensor::empty({big});
    first = t.data();
    t.data()[big - 1] = 1.f;
  }
  {
    Tensor smaller = Tensor::empty({big * 2 / 3});  // within the slack: the same block
    CHECK(smaller.data() == first);
  }
  {
    // The block went back whole: the original size finds it again.
    Tensor again = Tensor::empty({big});
    CHECK(again.data() == first);
    Tensor held = Tensor::empty({big});  // a second one while the block is taken
    CHECK(held.data() != first);
  }
  {
    Tensor tiny = Tensor::empty({big / 4});  // far smaller: not worth a 4x larger block
    CHECK(tiny.data() != first);
  }
}

TEST_CASE("copies alias, clone and views behave like PyTorch") {
  Tensor a = Tensor::from_data({2, 2}, {1, 2, 3, 4});
  Tensor alias = a;
  alias.data()[0] = 9.f;
  CHECK(a.at(0) == 9.f);
  Tensor c = a.clone();
  c.data()[1] = -1.f;
  CHECK(a.at(1) == 2.f);
  CHECK_FALSE(c.shares_storage_with(a));
  Tensor v = make_view(a, {4});
  CHECK(v.shares_storage_with(a));
  CHECK(v.shape() == Shape{4});
  CHECK_THROWS_AS(make_view(a, {3}), UsageError);
  Tensor det = a.detach();
  CHECK(det.shares_storage_with(a));
  CHECK(det.is_leaf());
}

TEST_CASE("generator is seeded, bit-stable and well distributed") {
  Generator g1(42), g2(42), g3(43);
  for (int i = 0; i < 100; ++i) {
    const uint64_t a = g1.next_u64();
    CHECK(a == g2.next_u64());
    CHECK(a != g3.next_u64());
  }
  Generator g(7);
  double mean = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double x = g.normal();
    mean += x;
    sq += x * x;
  }
  mean /= n;
  CHECK(std::abs(mean) < 0.03);
  CHECK(std::abs(sq / n - 1.0) < 0.05);
  for (int i = 0; i < 1000; ++i) {
    const float u = g.uniform();
    CHECK(u >= 0.f);
    CHECK(u < 1.f);
    CHECK(g.below(10) < 10u);
  }
  // State save/restore resumes the exact sequence, including the cached normal.
  g.normal();
  Generator::State st = g.state();
  const float next = g.normal();
  const float after = g.normal();
  g.set_state(st);
  CHECK(g.normal() == next);
  CHECK(g.normal() == after);
}
