// Progress drawing: bar, count, rate and ETA.
#include "tools/common/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/communicator.h"

namespace spruce::cli {

std::string format_duration(double seconds) {
  if (seconds < 0) seconds = 0;
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, int64_t units_per_step)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      units_per_step_(units_per_step),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double ProgressBar::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.1 : 10.0)) return;
  last_draw_ = now;
  draw(done, extra, false);
}

void ProgressBar::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  draw(total_, extra, true);
}

void ProgressBar::draw(int64_t done, const std::string& extra, bool final) {
  if (!world().is_root()) return;  // under mpirun, rank 0 speaks for all
  const double t = elapsed_seconds();
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const double rate = t > 0 ? static_cast<double>(done * units_per_step_) / t : 0.0;
  const double eta = done > 0 ? t * (1.0 - frac) / frac : 0.0;
  constexpr int kWidth = 24;
  std::string bar(kWidth, ' ');
  for (int i = 0; i < static_cast<int>(frac * kWidth + 1e-9) && i < kWidth; ++i) bar[i] = '#';
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %.0f %s %s %s %s%s", tty_ ? "\r\033[K" : "",
               label_.c_str(), bar.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), rate, unit_.c_str(), final ? "time" : "ETA",
               format_duration(final ? t : eta).c_str(), extra.c_str(),
               (final || !tty_) ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace spruce::cli
