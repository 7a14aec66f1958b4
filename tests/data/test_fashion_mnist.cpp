// The real Fashion-MNIST files from the Debian package dataset-fashion-mnist,
// when installed: counts, image size and label range. Skipped otherwise.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>

#include "data/idx.h"
#include "tests/skip.h"

using namespace spruce::data;

namespace {
bool installed() {
  std::error_code ec;
  return std::filesystem::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz", ec);
}
}  // namespace

TEST_CASE("fashion-mnist: the installed Debian files load" *
          doctest::skip(spruce::test::skip_unless(
              installed(), std::string(kFashionMnistDir) +
                               " is absent (apt-get install dataset-fashion-mnist)"))) {
  for (const bool train : {true, false}) {
    auto ds = load_fashion_mnist(kFashionMnistDir, train);
    CHECK(ds->size() == (train ? 60000 : 10000));
    CHECK(ds->image_shape() == ImageShape{1, 28, 28});
    CHECK(ds->num_classes() == 10);
    const auto& labels = ds->labels();
    CHECK(*std::min_element(labels.begin(), labels.end()) == 0);
    CHECK(*std::max_element(labels.begin(), labels.end()) == 9);
    // Balanced classes: 6000 / 1000 of each.
    for (int32_t c = 0; c < 10; ++c) {
      CHECK(std::count(labels.begin(), labels.end(), c) == (train ? 6000 : 1000));
    }
  }
}
