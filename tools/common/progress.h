// A terminal progress bar for long work (training epochs, Fisher collection).
//
// On a terminal it redraws one line in place; when stderr is a file or a pipe
// (CI, logs) it prints a plain line at most every few seconds, so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace spruce::cli {

class ProgressBar {
 public:
  /// `total` units of work (steps, samples); `unit` names them in the rate ("img/s").
  ProgressBar(std::string label, int64_t total, std::string unit = "it/s",
              int64_t units_per_step = 1);
  /// Reports that `done` units are finished, with extra text (loss, accuracy...).
  void update(int64_t done, const std::string& extra = "");
  /// Prints the final state and a newline.
  void finish(const std::string& extra = "");
  double elapsed_seconds() const;

 private:
  void draw(int64_t done, const std::string& extra, bool final);
  std::string label_, unit_;
  int64_t total_, units_per_step_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool finished_ = false;
};

/// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace spruce::cli
