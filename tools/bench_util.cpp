// spruce-bench's shared timing, memory, model and report helpers (bench_util.h).
#include "tools/bench_util.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/mac_counter.h"
#include "models/registry.h"

namespace spruce::bench {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Stat Stat::of(const std::vector<double>& v) {
  if (v.empty()) return {};
  return {median(v), *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end())};
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

Shape parse_shape(const std::string& s) {
  Shape out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, 'x')) {
    char* end = nullptr;
    const long v = std::strtol(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || v < 1) throw UsageError("--shapes: bad shape '" + s + "'");
    out.push_back(v);
  }
  if (out.size() != 3) throw UsageError("--shapes: expected CxHxW, got '" + s + "'");
  return out;
}

std::unique_ptr<Module> make_model(const std::string& name, int64_t in_channels) {
  models::ModelConfig cfg;
  cfg.in_channels = in_channels;
  cfg.num_classes = 10;
  if (name.rfind("resnet", 0) == 0) cfg.options["shortcut"] = "A";  // the PyTorch reference's
  cfg.seed = 0;
  return models::build_model(name, cfg);
}

int64_t macs_per_image(Module& model, const Shape& chw) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  ops::MacCounter counter;
  model(Tensor::zeros({1, chw[0], chw[1], chw[2]}));
  model.train(was_training);
  return counter.total();
}

std::string cell(const Stat& s, const char* f) {
  if (std::isnan(s.med)) return "-";
  if (s.lo == s.hi) return fmt(f, s.med);
  return fmt(f, s.med) + " [" + fmt(f, s.lo) + ".." + fmt(f, s.hi) + "]";
}

cli::Json json_stat(const Stat& s) { return {{"median", s.med}, {"min", s.lo}, {"max", s.hi}}; }

}  // namespace spruce::bench
