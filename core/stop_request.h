// Stopping a long job cleanly on Ctrl-C (SIGINT) or SIGTERM. While a
// StopOnSignal lives, the first such signal only sets a flag that the job
// polls at safe points (spruce-train: after each optimizer step), so it can
// finish the current step, save its state atomically and exit with
// 128 + signal (130 for SIGINT, 143 for SIGTERM). A second signal ends the
// process at once, by that signal: the files being written are abandoned
// (their temporaries removed, core/io/file.h), the previous ones intact.
//
// The handlers only touch atomics and async-signal-safe calls. One
// StopOnSignal at a time; its destructor restores the previous handlers.
#pragma once

#include <stdexcept>
#include <string>

namespace spruce {

class Communicator;

/// Thrown by a job that stopped on request after saving what it had to; the
/// tools print what() as one line and exit with status() (130 or 143).
class Stopped : public std::runtime_error {
 public:
  Stopped(const std::string& message, int status) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

class StopOnSignal {
 public:
  /// Installs the handlers. `notice` (one line) is written to stderr when the
  /// first signal arrives, e.g. "spruce-train: stopping after this step
  /// (Ctrl-C again to quit at once)".
  explicit StopOnSignal(const std::string& notice);
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  /// The signal that asked to stop (SIGINT or SIGTERM), 0 if none yet.
  static int requested();
  /// 128 + requested(): the exit status a stopped job returns.
  static int exit_status();
  /// "SIGINT" or "SIGTERM" for requested().
  static const char* signal_name();
  /// requested() on any rank of `comm`, agreed by all of them (a collective:
  /// every rank must call it at the same point), so that they stop together.
  static bool requested_on_any(Communicator& comm);
  /// Test hook: behave as if `signal` had arrived once (0 clears it).
  static void simulate(int signal);
};

}  // namespace spruce
