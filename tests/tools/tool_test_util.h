// Helpers for the end-to-end tests of the tool binaries: a tiny MNIST-format
// data set written by the test itself, and run() which starts a built tool
// with posix_spawn (no shell, so arguments need no quoting) and captures its
// exit status, the signal that killed it, stdout and stderr. The generic file
// helpers (temporary folder, byte-exact reads and writes, gzip) are
// tests/test_util.h's.
//
// The binaries' paths come from meson as compile definitions (SPRUCE_TRAIN_BIN,
// SPRUCE_EVAL_BIN, SPRUCE_PRUNE_BIN, SPRUCE_COMPARE_BIN, SPRUCE_FAULT_SHIM), so the tests always
// run the tools of the build directory they were built in.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "tests/test_util.h"

extern char** environ;

namespace spruce::tools_test {

using namespace spruce::test;

inline const std::string kTrain = SPRUCE_TRAIN_BIN;
inline const std::string kEval = SPRUCE_EVAL_BIN;
inline const std::string kPrune = SPRUCE_PRUNE_BIN;
inline const std::string kCompare = SPRUCE_COMPARE_BIN;
inline const std::string kFaultShim = SPRUCE_FAULT_SHIM;

/// Writes an MNIST-format data set to `dir`: train-{images-idx3,labels-idx1}-ubyte
/// with `train` random 28x28 images, t10k-* with `test`. Pixels and labels come
/// from a fixed xorshift stream, so every run of the test sees the same data.
inline void write_mnist(const fs::path& dir, uint32_t train = 96, uint32_t test = 32) {
  fs::create_directories(dir);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (const auto& [prefix, n] :
       {std::pair<std::string, uint32_t>{"train", train}, {"t10k", test}}) {
    std::vector<uint8_t> images, labels;
    put_be32(images, 0x00000803u);
    put_be32(images, n);
    put_be32(images, 28);
    put_be32(images, 28);
    for (uint32_t i = 0; i < n * 28 * 28; ++i) images.push_back(static_cast<uint8_t>(next() >> 56));
    put_be32(labels, 0x00000801u);
    put_be32(labels, n);
    for (uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(next() % 10));
    write_bytes((dir / (prefix + "-images-idx3-ubyte")).string(), images);
    write_bytes((dir / (prefix + "-labels-idx1-ubyte")).string(), labels);
  }
}

/// spruce-train flags for a tiny run on write_mnist(dir/"data") into
/// dir/out: a MobileNet of width 0.1, 2 epochs of 3 steps of 16, one thread;
/// it takes well under a second. `extra` adds or overrides flags.
inline std::vector<std::string> tiny_train_args(const TempDir& dir, const std::string& out,
                                                const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{"--data",       "mnist",
                             "--data-dir",   dir.file("data"),
                             "--model",      "mobilenet_v1",
                             "--width",      "0.1",
                             "--epochs",     "2",
                             "--batch-size", "16",
                             "--max-steps",  "3",
                             "--eval-limit", "32",
                             "--threads",    "1",
                             "--out",        dir.file(out)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

/// How a tool run ended and what it printed.
struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that ended it, 0 when it exited
  std::string out, err;
};

/// Non-empty lines of `text`.
inline std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// log.csv without its timing columns (epoch_seconds, img_per_s), which differ
/// between any two runs.
inline std::vector<std::string> csv_without_timing(const std::string& path) {
  std::vector<std::string> rows;
  for (const std::string& line : lines(read_text(path))) {
    std::vector<std::string> cols;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      cols.push_back(
          line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    REQUIRE_MESSAGE(cols.size() == 10, "unexpected log.csv row: " << line);
    rows.push_back(cols[0] + "," + cols[1] + "," + cols[2] + "," + cols[3] + "," + cols[4] + "," +
                   cols[5] + "," + cols[6] + "," + cols[9]);
  }
  return rows;
}

/// Runs `program` with `args`, stdin from /dev/null and the current environment
/// plus `env` ("NAME=value", replacing a variable of the same name). stdout and
/// stderr go to files in a private folder and are returned as text.
/// `while_running(pid, stdout_path)`, when given, is called once the
/// program has started (e.g. to signal it) and before waiting for it.
using WhileRunning = std::function<void(pid_t pid, const std::string& stdout_path)>;
inline RunResult run(const std::string& program, const std::vector<std::string>& args,
                     const std::vector<std::string>& env = {},
                     const WhileRunning& while_running = {}) {
  TempDir io;
  const std::string out_path = io.file("stdout"), err_path = io.file("stderr");
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    const std::string name = var.substr(0, var.find('='));
    bool replaced = false;
    for (const auto& add : env) replaced = replaced || add.substr(0, add.find('=')) == name;
    if (!replaced) env_s.push_back(var);
  }
  env_s.insert(env_s.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << program << ": " << std::strerror(rc));
  if (while_running) while_running(pid, out_path);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) REQUIRE(errno == EINTR);

  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

/// A WhileRunning that waits until the program's stdout holds `marker`
/// (polling every millisecond; immediately if empty), waits `delay_ms` more,
/// then sends it `signal` `count` times, `gap_ms` apart. If the program ends
/// first, nothing is sent.
inline WhileRunning send_signal(int signal, const std::string& marker, int delay_ms = 0,
                                int count = 1, int gap_ms = 0) {
  return [=](pid_t pid, const std::string& stdout_path) {
    auto alive = [pid] {  // without reaping it: run() waits for it afterwards
      siginfo_t info{};
      return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
             info.si_pid == 0;
    };
    auto sleep_ms = [](int ms) { ::usleep(static_cast<useconds_t>(ms) * 1000); };
    while (!marker.empty() && alive() && !contains(read_text(stdout_path), marker)) sleep_ms(1);
    sleep_ms(delay_ms);
    for (int i = 0; i < count && alive(); ++i) {
      if (i > 0) sleep_ms(gap_ms);
      ::kill(pid, signal);
    }
  };
}

/// Requires a run that exited normally with status 0, showing its output if not.
inline void expect_success(const RunResult& r) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  REQUIRE(r.signal == 0);
  REQUIRE(r.exit_code == 0);
}

/// "ASAN_OPTIONS=" the current ASAN_OPTIONS plus `option` (the last one given wins).
inline std::string asan_options_plus(const std::string& option) {
  std::string asan = option;
  if (const char* prev = std::getenv("ASAN_OPTIONS"); prev != nullptr && *prev != '\0')
    asan = std::string(prev) + ":" + asan;
  return "ASAN_OPTIONS=" + asan;
}

/// ASAN_OPTIONS allowing a preloaded shim: under AddressSanitizer the shim is
/// not the first library loaded, which ASan would refuse by default.
inline std::string asan_options_for_shim() { return asan_options_plus("verify_asan_link_order=0"); }

/// Environment that makes a tool SIGKILL itself at its `n`-th checkpoint
/// (counting renames onto a file named last.ckpt), "before" or "after" the
/// rename (see fault_shim.cpp).
inline std::vector<std::string> kill_at_checkpoint(int n, const std::string& when) {
  return {"LD_PRELOAD=" + kFaultShim, "SPRUCE_KILL_AT_CHECKPOINT=" + std::to_string(n),
          "SPRUCE_KILL_WHEN=" + when, asan_options_for_shim()};
}

/// Environment that raises `signal` ("INT" or "TERM") `count` times just
/// before the `n`-th rename onto last.ckpt: while a checkpoint is being saved
/// (see fault_shim.cpp).
inline std::vector<std::string> signal_at_checkpoint(int n, const std::string& signal,
                                                     int count = 1) {
  return {"LD_PRELOAD=" + kFaultShim, "SPRUCE_SIGNAL_AT_CHECKPOINT=" + std::to_string(n),
          "SPRUCE_SIGNAL=" + signal, "SPRUCE_SIGNAL_COUNT=" + std::to_string(count),
          asan_options_for_shim()};
}

/// Environment that makes the `n`-th write of the file named `name` fail
/// with `error` ("ENOSPC" or "EIO") `in` "write" (after `after` bytes) or
/// "fsync", as a full or broken disk would (see fault_shim.cpp).
inline std::vector<std::string> fail_write(const std::string& name, int n, const std::string& in,
                                           const std::string& error, long after = 0) {
  return {"LD_PRELOAD=" + kFaultShim,
          "SPRUCE_FAIL_WRITE=" + name,
          "SPRUCE_FAIL_AT=" + std::to_string(n),
          "SPRUCE_FAIL_IN=" + in,
          "SPRUCE_FAIL_ERRNO=" + error,
          "SPRUCE_FAIL_AFTER=" + std::to_string(after),
          asan_options_for_shim()};
}

}  // namespace spruce::tools_test
