// Learning-rate schedules: the learning rate as a pure function of the
// optimizer step (0-based, one per Sgd::step()), so a resumed run only needs
// the step count. Each follows the closed form of its PyTorch counterpart:
//
//   constant    lr
//   step        lr * gamma^floor(t / step_size)           (StepLR)
//   multistep   lr * gamma^(#milestones <= t)             (MultiStepLR)
//   cosine      min + (lr - min) (1 + cos(pi t / T)) / 2  (CosineAnnealingLR, T = total
//               steps; stays at min after T)
//   onecycle    OneCycleLR, anneal_strategy='cos', three_phase=False,
//               cycle_momentum=False (formula at OneCycleLr)
//   warm-up     wraps any of these: the first W steps are scaled by a factor
//               rising linearly from start_factor to 1 (LinearLR chained with
//               the wrapped schedule, which keeps its own clock)
//
// Training loops call `opt.set_lr(schedule.lr_at(step))` before each step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace spruce::optim {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  /// The learning rate of optimizer step `step` (>= 0; UsageError otherwise).
  virtual double lr_at(int64_t step) const = 0;
};

/// The same learning rate at every step.
class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(double lr);
  double lr_at(int64_t step) const override;

 private:
  double lr_;
};

/// Decays by `gamma` every `step_size` steps.
class StepLr : public LrSchedule {
 public:
  StepLr(double lr, int64_t step_size, double gamma);
  double lr_at(int64_t step) const override;

 private:
  double lr_;
  int64_t step_size_;
  double gamma_;
};

/// Decays by `gamma` at each milestone step (sorted on construction).
class MultiStepLr : public LrSchedule {
 public:
  MultiStepLr(double lr, std::vector<int64_t> milestones, double gamma);
  double lr_at(int64_t step) const override;

 private:
  double lr_;
  std::vector<int64_t> milestones_;
  double gamma_;
};

/// Half a cosine from `lr` at step 0 to `min_lr` at `total_steps`, then flat.
class CosineLr : public LrSchedule {
 public:
  CosineLr(double lr, int64_t total_steps, double min_lr = 0.0);
  double lr_at(int64_t step) const override;

 private:
  double lr_;
  int64_t total_steps_;
  double min_lr_;
};

/// Scales the first `warmup_steps` steps of `inner` by
/// start_factor + (1 - start_factor) * t / warmup_steps (PyTorch LinearLR's
/// factor; its default start_factor is 1/3).
class WarmupLr : public LrSchedule {
 public:
  WarmupLr(std::unique_ptr<LrSchedule> inner, int64_t warmup_steps,
           double start_factor = 1.0 / 3.0);
  double lr_at(int64_t step) const override;

 private:
  std::unique_ptr<LrSchedule> inner_;
  int64_t warmup_steps_;
  double start_factor_;
};

struct OneCycleOptions {
  /// Fraction of the steps spent rising (PyTorch's default is 0.3; our recipe 0.25).
  double pct_start = 0.25;
  /// Initial lr = max_lr / div_factor.
  double div_factor = 25.0;
  /// Final lr = initial lr / final_div_factor.
  double final_div_factor = 1e4;
};

/// PyTorch's OneCycleLR (two phases, cosine annealing, no momentum cycling).
/// With initial = max_lr / div_factor and final = initial / final_div_factor,
/// phase 1 runs from step 0 to e1 = pct_start * total_steps - 1 (a real
/// number, as in PyTorch) from initial up to max_lr, phase 2 from e1 to
/// total_steps - 1 down to final; within a phase from s to e, at
/// p = (t - s) / (e - s): lr = end + (start - end) (1 + cos(pi p)) / 2.
/// Steps past total_steps - 1 keep the final lr (PyTorch raises there).
class OneCycleLr : public LrSchedule {
 public:
  OneCycleLr(double max_lr, int64_t total_steps, OneCycleOptions options = {});
  double lr_at(int64_t step) const override;

 private:
  double max_lr_;
  double initial_lr_;
  double final_lr_;
  int64_t total_steps_;
  double warmup_end_;  // e1 above
};

/// Everything make_schedule may use; each schedule reads only its own fields.
struct ScheduleOptions {
  double lr = 0.1;                  // base lr; the peak for onecycle
  int64_t total_steps = 0;          // cosine, onecycle
  double min_lr = 0.0;              // cosine
  double gamma = 0.1;               // step
  int64_t step_size = 0;            // step: decay every step_size steps, or
  std::vector<int64_t> milestones;  // step: decay at these steps
  int64_t warmup_steps = 0;         // > 0 wraps the schedule in a linear warm-up
  double warmup_start_factor = 1.0 / 3.0;
  OneCycleOptions one_cycle;
};

/// The schedule names make_schedule knows, for --help and error messages.
std::vector<std::string> schedule_names();

/// Builds "constant", "step" (step_size or milestones), "cosine" or
/// "onecycle", wrapped in a warm-up when warmup_steps > 0. Throws UsageError
/// naming the schedule and the option for an unknown name (listing the
/// known ones) or invalid options.
std::unique_ptr<LrSchedule> make_schedule(const std::string& name, const ScheduleOptions& options);

}  // namespace spruce::optim
