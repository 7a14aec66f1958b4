// Transforms: normalisation against hand-computed values, crops at known
// offsets, flips, and the random versions' use of the generator.
#include <doctest/doctest.h>

#include <set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "data/transforms.h"

using namespace spruce;
using namespace spruce::data;

namespace {

std::vector<float> iota9() { return {1, 2, 3, 4, 5, 6, 7, 8, 9}; }  // [1, 3, 3]

}  // namespace

TEST_CASE("normalize: per channel and broadcast") {
  Generator gen(0);
  std::vector<float> img = {0.5f, 1.0f, 0.2f, 0.4f};  // [2, 1, 2]
  Normalize({0.5f, 0.2f}, {0.5f, 0.1f}).apply(img, {2, 1, 2}, gen);
  CHECK(img[0] == 0.f);
  CHECK(img[1] == 1.f);
  CHECK(img[2] == 0.f);
  CHECK(img[3] == doctest::Approx(2.f).epsilon(1e-6));

  std::vector<float> img2 = {0.f, 1.f, 0.25f, 0.75f};  // [2, 1, 2], one value for both channels
  Normalize({0.25f}, {0.5f}).apply(img2, {2, 1, 2}, gen);
  CHECK(img2 == std::vector<float>{-0.5f, 1.5f, 0.f, 1.f});

  const Normalize f = Normalize::fashion_mnist();
  CHECK(f.mean() == std::vector<float>{0.2860f});
  CHECK(f.stddev() == std::vector<float>{0.3530f});
  const Normalize c = Normalize::cifar10();
  REQUIRE(c.mean().size() == 3);
  CHECK(c.mean()[2] == 0.4465f);
  CHECK(c.stddev()[0] == 0.2470f);

  CHECK_THROWS_AS(Normalize({0.5f, 0.5f}, {0.5f}), UsageError);
  CHECK_THROWS_AS(Normalize({0.5f}, {0.f}), UsageError);
  CHECK_THROWS_AS(c.check({1, 28, 28}), UsageError);  // 3 values for 1 channel
  CHECK_NOTHROW(f.check({3, 32, 32}));                // 1 value broadcasts
}

TEST_CASE("random crop: known offsets") {
  const ImageShape shape{1, 3, 3};
  std::vector<float> img = iota9();
  RandomCrop::crop(img, shape, 1, 0, 0);  // window shifted up-left: zero row and column
  CHECK(img == std::vector<float>{0, 0, 0, 0, 1, 2, 0, 4, 5});

  img = iota9();
  RandomCrop::crop(img, shape, 1, 2, 1);  // two rows down, centred horizontally
  CHECK(img == std::vector<float>{4, 5, 6, 7, 8, 9, 0, 0, 0});

  img = iota9();
  RandomCrop::crop(img, shape, 1, 1, 1);  // centre: unchanged
  CHECK(img == iota9());

  img = iota9();
  RandomCrop::crop(img, shape, 4, 8, 0);  // padding larger than the image: all zeros
  CHECK(img == std::vector<float>(9, 0.f));

  // Two channels move together.
  std::vector<float> two = {1, 2, 3, 4, 10, 20, 30, 40};  // [2, 2, 2]
  RandomCrop::crop(two, {2, 2, 2}, 1, 1, 2);
  CHECK(two == std::vector<float>{2, 0, 4, 0, 20, 0, 40, 0});

  CHECK_THROWS_AS(RandomCrop::crop(img, shape, 1, 3, 0), UsageError);
  CHECK_THROWS_AS(RandomCrop(-1), UsageError);
}

TEST_CASE("random crop: every offset reachable, repeatable by seed") {
  const RandomCrop crop(1);
  std::set<std::vector<float>> seen;
  for (uint64_t s = 0; s < 200; ++s) {
    Generator gen(s);
    std::vector<float> img = iota9();
    crop.apply(img, {1, 3, 3}, gen);
    seen.insert(img);
    Generator again(s);
    std::vector<float> img2 = iota9();
    crop.apply(img2, {1, 3, 3}, again);
    CHECK(img2 == img);
  }
  CHECK(seen.size() == 9);  // (2 * padding + 1)^2 distinct crops
}

TEST_CASE("horizontal flip") {
  std::vector<float> img = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [2, 2, 3]
  RandomHorizontalFlip::flip(img, {2, 2, 3});
  CHECK(img == std::vector<float>{3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10});

  // p = 0 never flips, p = 1 always does; both consume exactly one draw.
  Generator g0(7), g1(7);
  std::vector<float> a = iota9(), b = iota9();
  RandomHorizontalFlip(0.f).apply(a, {1, 3, 3}, g0);
  RandomHorizontalFlip(1.f).apply(b, {1, 3, 3}, g1);
  CHECK(a == iota9());
  CHECK(b == std::vector<float>{3, 2, 1, 6, 5, 4, 9, 8, 7});
  CHECK(g0.next_u64() == g1.next_u64());

  // p = 0.5 flips about half the time.
  Generator gen(1);
  int flips = 0;
  const RandomHorizontalFlip half;
  for (int i = 0; i < 1000; ++i) {
    std::vector<float> x = {1, 2};
    half.apply(x, {1, 1, 2}, gen);
    flips += x[0] == 2.f;
  }
  CHECK(flips > 430);
  CHECK(flips < 570);
  CHECK_THROWS_AS(RandomHorizontalFlip(1.5f), UsageError);
}

TEST_CASE("transform lists") {
  const TransformList train = train_transforms(Normalize::cifar10(), 4, true);
  REQUIRE(train.size() == 3);
  CHECK(train[0]->describe() == "random_crop(padding=4)");
  CHECK(train[1]->describe() == "random_horizontal_flip(p=0.5)");
  CHECK(train[2]->describe() ==
        "normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616])");
  const TransformList eval = eval_transforms(Normalize::fashion_mnist());
  REQUIRE(eval.size() == 1);
  CHECK(train_transforms(Normalize::fashion_mnist(), 0, false).size() == 1);
}
