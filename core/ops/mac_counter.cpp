// The thread's innermost MacCounter, as a thread_local pointer: ops pay one
// load and a branch per call when no counter is alive.
#include "mac_counter.h"

namespace spruce::ops {
namespace {
thread_local MacCounter* t_counter = nullptr;
}

MacCounter::MacCounter() : outer_(t_counter) { t_counter = this; }

MacCounter::~MacCounter() { t_counter = outer_; }

void count_macs(int64_t macs) {
  if (t_counter) t_counter->total_ += macs;
}

}  // namespace spruce::ops
