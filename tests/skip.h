// Marking a test case that cannot run here as skipped, with the reason:
//
//   TEST_CASE("numpy reads it" * doctest::skip(skip_unless(have_numpy(), "no numpy")))
//
// The condition is evaluated once, when the executable starts; the reason is
// printed then, so the log says why a case did not run. doctest counts the
// case as skipped ("N skipped" in its summary) and tests/main.cpp turns an
// executable whose every case was skipped into Meson's SKIP (exit status 77).
#pragma once

#include <cstdio>
#include <set>
#include <string>

namespace spruce::test {

/// True (skip) when `available` is false; prints "skipped: <why>" once per reason.
inline bool skip_unless(bool available, const std::string& why) {
  static std::set<std::string> said;
  if (!available && said.insert(why).second) std::printf("skipped: %s\n", why.c_str());
  return !available;
}

}  // namespace spruce::test
