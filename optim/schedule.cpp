// Learning-rate schedules (formulas in schedule.h) and their factory.
#include "schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "../core/error.h"

namespace spruce::optim {

namespace {

// A double as a message shows it: "0.1", not "0.100000".
std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void check_step(int64_t step) {
  if (step < 0) throw UsageError("lr schedule: step " + std::to_string(step) + " (expected >= 0)");
}

[[noreturn]] void bad(const std::string& schedule, const std::string& what) {
  throw UsageError("lr schedule '" + schedule + "': " + what);
}

void check_lr(const std::string& schedule, const char* field, double v) {
  if (!(v >= 0.0) || !std::isfinite(v))
    bad(schedule, std::string(field) + " is " + num(v) + " (expected a finite value >= 0)");
}

// Cosine interpolation from `start` (p = 0) to `end` (p = 1), PyTorch's
// OneCycleLR._annealing_cos.
double anneal_cos(double start, double end, double p) {
  return end + (start - end) / 2.0 * (std::cos(std::numbers::pi * p) + 1.0);
}

}  // namespace

ConstantLr::ConstantLr(double lr) : lr_(lr) { check_lr("constant", "lr", lr); }

double ConstantLr::lr_at(int64_t step) const {
  check_step(step);
  return lr_;
}

StepLr::StepLr(double lr, int64_t step_size, double gamma)
    : lr_(lr), step_size_(step_size), gamma_(gamma) {
  check_lr("step", "lr", lr);
  if (step_size <= 0) bad("step", "step_size is " + std::to_string(step_size) + " (expected > 0)");
  check_lr("step", "gamma", gamma);
}

double StepLr::lr_at(int64_t step) const {
  check_step(step);
  return lr_ * std::pow(gamma_, static_cast<double>(step / step_size_));
}

MultiStepLr::MultiStepLr(double lr, std::vector<int64_t> milestones, double gamma)
    : lr_(lr), milestones_(std::move(milestones)), gamma_(gamma) {
  check_lr("step", "lr", lr);
  check_lr("step", "gamma", gamma);
  if (milestones_.empty()) bad("step", "no milestones");
  std::sort(milestones_.begin(), milestones_.end());
  if (milestones_.front() < 0)
    bad("step", "milestone " + std::to_string(milestones_.front()) + " (expected >= 0)");
}

double MultiStepLr::lr_at(int64_t step) const {
  check_step(step);
  // PyTorch: bisect_right, i.e. a milestone m applies from step m on.
  const auto passed =
      std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
  return lr_ * std::pow(gamma_, static_cast<double>(passed));
}

CosineLr::CosineLr(double lr, int64_t total_steps, double min_lr)
    : lr_(lr), total_steps_(total_steps), min_lr_(min_lr) {
  check_lr("cosine", "lr", lr);
  check_lr("cosine", "min_lr", min_lr);
  if (total_steps <= 0)
    bad("cosine", "total_steps is " + std::to_string(total_steps) + " (expected > 0)");
}

double CosineLr::lr_at(int64_t step) const {
  check_step(step);
  const double t = static_cast<double>(std::min(step, total_steps_));
  return min_lr_ + (lr_ - min_lr_) *
                       (1.0 + std::cos(std::numbers::pi * t / static_cast<double>(total_steps_))) /
                       2.0;
}

WarmupLr::WarmupLr(std::unique_ptr<LrSchedule> inner, int64_t warmup_steps, double start_factor)
    : inner_(std::move(inner)), warmup_steps_(warmup_steps), start_factor_(start_factor) {
  if (!inner_) bad("warmup", "no schedule to wrap");
  if (warmup_steps <= 0)
    bad("warmup", "warmup_steps is " + std::to_string(warmup_steps) + " (expected > 0)");
  if (!(start_factor >= 0.0 && start_factor <= 1.0))
    bad("warmup", "start_factor is " + num(start_factor) + " (expected in [0, 1])");
}

double WarmupLr::lr_at(int64_t step) const {
  check_step(step);
  const double lr = inner_->lr_at(step);
  if (step >= warmup_steps_) return lr;
  const double t = static_cast<double>(step) / static_cast<double>(warmup_steps_);
  return lr * (start_factor_ + (1.0 - start_factor_) * t);
}

OneCycleLr::OneCycleLr(double max_lr, int64_t total_steps, OneCycleOptions o)
    : max_lr_(max_lr), total_steps_(total_steps) {
  check_lr("onecycle", "max lr", max_lr);
  if (total_steps <= 0)
    bad("onecycle", "total_steps is " + std::to_string(total_steps) + " (expected > 0)");
  if (!(o.pct_start >= 0.0 && o.pct_start <= 1.0))
    bad("onecycle", "pct_start is " + num(o.pct_start) + " (expected in [0, 1])");
  if (!(o.div_factor > 0.0))
    bad("onecycle", "div_factor is " + num(o.div_factor) + " (expected > 0)");
  if (!(o.final_div_factor > 0.0))
    bad("onecycle", "final_div_factor is " + num(o.final_div_factor) + " (expected > 0)");
  initial_lr_ = max_lr / o.div_factor;
  final_lr_ = initial_lr_ / o.final_div_factor;
  warmup_end_ = o.pct_start * static_cast<double>(total_steps) - 1.0;
}

double OneCycleLr::lr_at(int64_t step) const {
  check_step(step);
  const double last = static_cast<double>(total_steps_ - 1);
  const double t = std::min(static_cast<double>(step), last);
  // A phase whose length is zero is at its end (PyTorch divides by zero there).
  if (t <= warmup_end_) {
    const double p = warmup_end_ > 0.0 ? t / warmup_end_ : 1.0;
    return anneal_cos(initial_lr_, max_lr_, p);
  }
  const double p = last > warmup_end_ ? (t - warmup_end_) / (last - warmup_end_) : 1.0;
  return anneal_cos(max_lr_, final_lr_, p);
}

std::vector<std::string> schedule_names() { return {"constant", "step", "cosine", "onecycle"}; }

std::unique_ptr<LrSchedule> make_schedule(const std::string& name, const ScheduleOptions& o) {
  std::unique_ptr<LrSchedule> s;
  if (name == "constant") {
    s = std::make_unique<ConstantLr>(o.lr);
  } else if (name == "step") {
    if (!o.milestones.empty() && o.step_size > 0)
      bad(name, "give step_size or milestones, not both");
    if (!o.milestones.empty())
      s = std::make_unique<MultiStepLr>(o.lr, o.milestones, o.gamma);
    else if (o.step_size > 0)
      s = std::make_unique<StepLr>(o.lr, o.step_size, o.gamma);
    else
      bad(name, "needs step_size > 0 or milestones");
  } else if (name == "cosine") {
    s = std::make_unique<CosineLr>(o.lr, o.total_steps, o.min_lr);
  } else if (name == "onecycle") {
    if (o.warmup_steps > 0) bad(name, "has its own warm-up (pct_start); warmup_steps must be 0");
    s = std::make_unique<OneCycleLr>(o.lr, o.total_steps, o.one_cycle);
  } else {
    std::string known;
    for (const auto& n : schedule_names()) known += (known.empty() ? "" : ", ") + n;
    throw UsageError("unknown lr schedule '" + name + "' (known: " + known + ")");
  }
  if (o.warmup_steps < 0)
    bad(name, "warmup_steps is " + std::to_string(o.warmup_steps) + " (expected >= 0)");
  if (o.warmup_steps > 0)
    s = std::make_unique<WarmupLr>(std::move(s), o.warmup_steps, o.warmup_start_factor);
  return s;
}

}  // namespace spruce::optim
