// Writes the seed corpus of every fuzz target: make_seeds DIR creates
// DIR/<target>/<seed name> for each valid input of fuzz_readers.cpp's seeds().
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/fuzz/fuzz_readers.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  namespace fs = std::filesystem;
  for (const auto& target : spruce::fuzz::targets()) {
    const fs::path dir = fs::path(argv[1]) / target.name;
    fs::create_directories(dir);
    for (const auto& seed : spruce::fuzz::seeds(target.name)) {
      std::ofstream out(dir / seed.name, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(seed.bytes.data()),
                static_cast<std::streamsize>(seed.bytes.size()));
      if (!out) {
        std::fprintf(stderr, "make_seeds: cannot write %s\n", (dir / seed.name).c_str());
        return 1;
      }
    }
  }
  return 0;
}
