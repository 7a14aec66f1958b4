// The `models` section of spruce-bench (bench_models.h): each configuration
// timed in a child process, the children's RESULT lines gathered into the
// table and the JSON rows.
#include "tools/bench_models.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/loss.h"
#include "core/parallel.h"
#include "core/random.h"
#include "optim/sgd.h"
#include "tools/bench_util.h"

namespace spruce::bench {

namespace {

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("spruce-bench: cannot read /proc/self/exe");
  buf[n] = '\0';
  return buf;
}

/// Runs the child for one configuration and parses its RESULT line.
std::map<std::string, double> spawn_child(const ChildSpec& c) {
  std::string cmd = "'";
  cmd += self_exe();
  cmd += "' --child";
  for (const std::string& arg :
       {c.model, c.shape, std::to_string(c.batch), std::to_string(c.threads),
        std::to_string(c.iters), std::to_string(c.infer_iters), std::to_string(c.warmup)})
    cmd += " " + arg;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw Error("spruce-bench: cannot start " + cmd);
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  const int status = pclose(p);
  std::map<std::string, double> out;
  const size_t at = text.find("RESULT ");
  if (status != 0 || at == std::string::npos)
    throw Error("spruce-bench: child '" + cmd + "' failed: " + text);
  std::istringstream is(text.substr(at + 7));
  std::string kv;
  while (is >> kv) {
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = std::stod(kv.substr(eq + 1));
  }
  return out;
}

struct ModelRow {
  std::string model, shape;
  int64_t batch = 0, threads = 0, params = 0, macs = 0;
  Stat train_ips, train_ms, train_cpu_ms, infer_ips, rss;
  double train_min_ms = NAN;
};

ModelRow bench_model(const ChildSpec& spec, int64_t runs) {
  ModelRow r;
  r.model = spec.model, r.shape = spec.shape, r.batch = spec.batch, r.threads = spec.threads;
  std::vector<double> tips, tms, tcpu, iips, rss, tmin;
  for (int64_t k = 0; k < runs; ++k) {
    auto res = spawn_child(spec);
    r.macs = static_cast<int64_t>(res["macs"]);
    r.params = static_cast<int64_t>(res["params"]);
    tips.push_back(static_cast<double>(spec.batch) / res["train_s"]);
    tms.push_back(res["train_s"] * 1e3);
    tmin.push_back(res["train_min_s"] * 1e3);
    tcpu.push_back(res["train_cpu_s"] * 1e3);
    iips.push_back(static_cast<double>(spec.batch) / res["infer_s"]);
    rss.push_back(res["rss_train"]);
  }
  r.train_ips = Stat::of(tips), r.train_ms = Stat::of(tms), r.infer_ips = Stat::of(iips);
  r.train_cpu_ms = Stat::of(tcpu);
  r.rss = Stat::of(rss);
  r.train_min_ms = *std::min_element(tmin.begin(), tmin.end());
  return r;
}

}  // namespace

/// Runs one configuration and prints "RESULT key=value ..." for the parent.
int run_child(const ChildSpec& c) {
  // The parent passes validated flags; a hand-typed --child line is checked
  // too (no iterations would leave nothing to take a median of).
  if (c.batch < 1 || c.threads < 1 || c.iters < 1 || c.infer_iters < 1 || c.warmup < 0)
    throw UsageError("--child: expected BATCH, THREADS, ITERS, INFER_ITERS >= 1 and WARMUP >= 0");
  set_num_threads(static_cast<int>(c.threads));
  const Shape chw = parse_shape(c.shape);
  auto model = make_model(c.model, chw[0]);
  const int64_t macs = macs_per_image(*model, chw);
  Generator gen(0);
  const Tensor x = Tensor::randn({c.batch, chw[0], chw[1], chw[2]}, gen);
  std::vector<int32_t> y(static_cast<size_t>(c.batch));
  for (auto& v : y) v = static_cast<int32_t>(gen.uniform(0.f, 10.f)) % 10;
  const double rss_before = peak_rss_mib();

  optim::SgdOptions so;
  so.lr = 0.01, so.momentum = 0.9, so.nesterov = true, so.weight_decay = 5e-4;
  optim::Sgd opt(model->named_parameters(), so);
  Module* m = model.get();
  opt.add_post_step_hook([m](optim::Sgd&) { m->apply_masks(); });
  auto train_step = [&] {
    opt.zero_grad();
    Tensor loss = ops::cross_entropy((*m)(x), y);
    loss.backward();
    opt.step();
  };

  model->train();
  for (int64_t i = 0; i < c.warmup; ++i) train_step();
  std::vector<double> tt, tc;
  for (int64_t i = 0; i < c.iters; ++i) {
    const auto t0 = Clock::now();
    const double c0 = process_cpu_seconds();
    train_step();
    tt.push_back(seconds_since(t0));
    tc.push_back(process_cpu_seconds() - c0);
  }
  const double rss_train = peak_rss_mib();

  model->eval();
  std::vector<double> ti;
  {
    NoGradGuard no_grad;
    for (int64_t i = 0; i < c.warmup; ++i) (*m)(x);
    for (int64_t i = 0; i < c.infer_iters; ++i) {
      const auto t0 = Clock::now();
      (*m)(x);
      ti.push_back(seconds_since(t0));
    }
  }
  std::printf(
      "RESULT macs=%lld params=%lld train_s=%.9g train_min_s=%.9g train_cpu_s=%.9g infer_s=%.9g "
      "infer_min_s=%.9g rss_before=%.3f rss_train=%.3f rss_end=%.3f\n",
      static_cast<long long>(macs), static_cast<long long>(model->num_parameters()), median(tt),
      *std::min_element(tt.begin(), tt.end()), median(tc), median(ti),
      *std::min_element(ti.begin(), ti.end()), rss_before, rss_train, peak_rss_mib());
  return 0;
}

cli::Json run_models_section(const std::vector<std::string>& models,
                             const std::vector<std::string>& shapes, const ChildSpec& base,
                             int64_t runs) {
  std::printf(
      "\n## models (batch %lld; train = fwd + CE + bwd + SGD momentum/nesterov/wd + post-step;\n"
      "##   GFLOP/s: train 3 x 2 x MACs x img/s, inference 2 x MACs x img/s; RSS: ru_maxrss "
      "after "
      "training, fresh process)\n",
      static_cast<long long>(base.batch));
  std::printf("%-13s %-8s %7s %-24s %8s %7s %-26s %7s %-20s\n", "model", "input", "MMACs",
              "train img/s", "step ms", "GFLOP/s", "infer img/s", "GFLOP/s", "peak RSS MiB");
  std::fflush(stdout);
  cli::Json rows = cli::Json::array();
  for (const auto& model : models)
    for (const auto& shape : shapes) {
      ChildSpec spec = base;
      spec.model = model, spec.shape = shape;
      const ModelRow r = bench_model(spec, runs);
      const double mm = static_cast<double>(r.macs);
      std::printf("%-13s %-8s %7.2f %-24s %8.1f %7.1f %-26s %7.1f %-20s\n", model.c_str(),
                  shape.c_str(), mm / 1e6, cell(r.train_ips, "%.1f").c_str(), r.train_ms.med,
                  6 * mm * r.train_ips.med / 1e9, cell(r.infer_ips, "%.1f").c_str(),
                  2 * mm * r.infer_ips.med / 1e9, cell(r.rss, "%.0f").c_str());
      std::fflush(stdout);
      rows.push_back({{"model", model},
                      {"shape", shape},
                      {"batch_size", base.batch},
                      {"threads", base.threads},
                      {"params", r.params},
                      {"macs_per_img", r.macs},
                      {"runs", runs},
                      {"iters", base.iters},
                      {"warmup", base.warmup},
                      {"train_img_s", json_stat(r.train_ips)},
                      {"train_step_ms", json_stat(r.train_ms)},
                      {"train_step_ms_min", r.train_min_ms},
                      {"train_step_cpu_ms", json_stat(r.train_cpu_ms)},
                      {"train_gflops", 6 * mm * r.train_ips.med / 1e9},
                      {"infer_img_s", json_stat(r.infer_ips)},
                      {"infer_gflops", 2 * mm * r.infer_ips.med / 1e9},
                      {"peak_rss_train_mib", json_stat(r.rss)}});
    }
  return rows;
}

}  // namespace spruce::bench
