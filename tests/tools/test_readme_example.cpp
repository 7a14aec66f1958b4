// The README's library example is the example the suite compiles and runs:
// the ```cpp block under "## Use spruce as a library" in README.md must be
// tools/examples/gradual_pruning.cpp, byte for byte, so the README can never
// show code that no longer builds.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), path << ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("README: the library example is tools/examples/gradual_pruning.cpp, byte for byte") {
  const std::string root = SPRUCE_SOURCE_ROOT;
  const std::string readme = read_text(root + "/README.md");
  const std::string example = read_text(root + "/tools/examples/gradual_pruning.cpp");
  const size_t section = readme.find("\n## Use spruce as a library\n");
  REQUIRE_MESSAGE(section != std::string::npos, "README.md has no '## Use spruce as a library'");
  const std::string open = "\n```cpp\n", close = "\n```\n";
  const size_t begin = readme.find(open, section);
  REQUIRE(begin != std::string::npos);
  const size_t code = begin + open.size();
  const size_t end = readme.find(close, code - 1);
  REQUIRE(end != std::string::npos);
  const std::string shown = readme.substr(code, end + 1 - code);
  CHECK_MESSAGE(shown == example,
                "README.md's example differs from tools/examples/gradual_pruning.cpp: copy the "
                "file into the README's ```cpp block");
}
