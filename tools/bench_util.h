// Shared pieces of spruce-bench's sections: timing (wall and process CPU
// seconds, medians and the [min..max] spread of runs), peak memory, the
// benchmark models with their multiply-add counts, and the table and JSON
// cells every section prints.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"
#include "tools/common/json.h"

namespace spruce::bench {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0);

/// The median of v; NaN when v is empty.
double median(std::vector<double> v);

/// Median of a set of runs with their spread, for "x [lo..hi]" cells.
struct Stat {
  double med = NAN, lo = NAN, hi = NAN;
  static Stat of(const std::vector<double>& v);
};

/// CPU seconds used by the whole process (all threads) so far. On a shared
/// machine a step's CPU time varies much less than its wall time.
double process_cpu_seconds();

/// The process's peak resident memory so far (ru_maxrss), in MiB.
double peak_rss_mib();

/// One number printed with the printf format f.
std::string fmt(const char* f, double v);

/// "1x28x28" -> {1, 28, 28}; UsageError naming --shapes otherwise.
Shape parse_shape(const std::string& s);

/// A registry model with 10 classes and seed 0, ResNets with option-A
/// shortcuts (the PyTorch reference's).
std::unique_ptr<Module> make_model(const std::string& name, int64_t in_channels);

/// Conv + linear multiply-adds of one image through `model` (eval, no grad).
int64_t macs_per_image(Module& model, const Shape& chw);

/// A table cell "median [lo..hi]" (just the median when all runs agree, "-" for none).
std::string cell(const Stat& s, const char* f);

/// {"median", "min", "max"} of a Stat.
cli::Json json_stat(const Stat& s);

}  // namespace spruce::bench
