// The fuzz targets' readers run as ordinary tests (no libFuzzer needed): every
// seed of the corpus is a valid file that its reader accepts, the same seed
// one byte short is rejected with a FormatError (except for images, which
// stb may decode from a truncated file), and every input a fuzzer once
// crashed with, kept in regressions/<target>/, is now rejected with a
// FormatError.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/fuzz/fuzz_readers.h"

using namespace spruce;
using namespace spruce::fuzz;

namespace {

std::string error_of(const Target& t, Bytes input) {
  try {
    t.read(input);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("fuzz seeds are files their readers accept") {
  for (const Target& t : targets()) {
    const std::vector<Seed> all = seeds(t.name);
    CAPTURE(t.name);
    CHECK(all.size() >= 2);
    for (const Seed& s : all) {
      CAPTURE(s.name);
      CHECK(error_of(t, s.bytes) == "");
    }
  }
}

TEST_CASE("fuzz seeds one byte short are FormatErrors") {
  for (const Target& t : targets()) {
    if (std::string(t.name) == "image") continue;
    for (const Seed& s : seeds(t.name)) {
      if (s.name == "meta") continue;  // a text file: the last newline is optional
      CAPTURE(t.name);
      CAPTURE(s.name);
      const Bytes shorter(s.bytes.data(), s.bytes.size() - 1);
      CHECK_THROWS_AS(t.read(shorter), FormatError);
    }
  }
}

TEST_CASE("inputs that once crashed a fuzz target are FormatErrors") {
  namespace fs = std::filesystem;
  const fs::path root = SPRUCE_FUZZ_REGRESSIONS;
  for (const Target& t : targets()) {
    const fs::path dir = root / t.name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      CAPTURE(entry.path().string());
      std::ifstream in(entry.path(), std::ios::binary);
      const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                       std::istreambuf_iterator<char>()};
      REQUIRE(!bytes.empty());
      CHECK_THROWS_AS(t.read(bytes), FormatError);
    }
  }
}
