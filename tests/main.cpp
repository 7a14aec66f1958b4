// The doctest runner shared by every test executable.
//
// A test case that cannot run on this machine (no AVX-512 for the Winograd
// kernels, no numpy, no installed data set) is marked skipped with
// doctest::skip (tests/skip.h), so doctest counts it as skipped, never as
// passed. When every test case of an executable was skipped and none failed,
// the executable exits with 77, which Meson reports as SKIP.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

namespace {

/// The totals of the last run, for main's exit status.
doctest::TestRunStats g_stats{};

struct RunTotals : doctest::IReporter {
  explicit RunTotals(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override { g_stats = stats; }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("run_totals", 1, RunTotals);

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  constexpr int kMesonSkip = 77;
  if (rc == 0 && g_stats.numTestCases > 0 && g_stats.numTestCasesPassingFilters == 0)
    return kMesonSkip;
  return rc;
}
