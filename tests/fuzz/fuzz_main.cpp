// The libFuzzer entry point. meson builds this file once per reader, with
// SPRUCE_FUZZ_READER naming the function of fuzz_readers.h to call (read_idx,
// read_npz, ...). A reader may reject its input with a spruce::Error; any
// other exception escapes, and libFuzzer reports it (as a crash) with the input.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "tests/fuzz/fuzz_readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    spruce::fuzz::SPRUCE_FUZZ_READER({data, size});
  } catch (const spruce::Error&) {
  }
  return 0;
}
