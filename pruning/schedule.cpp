// Polynomial (cubic) sparsity schedule.
#include "schedule.h"

#include <algorithm>
#include <string>

#include "../core/error.h"

namespace spruce::pruning {

void GradualSchedule::validate() const {
  if (start < 0)
    throw UsageError("pruning schedule: start " + std::to_string(start) + " must be >= 0");
  if (end < start)
    throw UsageError("pruning schedule: end " + std::to_string(end) + " is before start " +
                     std::to_string(start));
  if (frequency < 1)
    throw UsageError("pruning schedule: frequency " + std::to_string(frequency) + " must be >= 1");
  if (!(initial_sparsity >= 0 && initial_sparsity < 1))
    throw UsageError("pruning schedule: initial sparsity " + std::to_string(initial_sparsity) +
                     " must be in [0, 1)");
  if (!(final_sparsity >= initial_sparsity && final_sparsity < 1))
    throw UsageError("pruning schedule: final sparsity " + std::to_string(final_sparsity) +
                     " must be in [initial sparsity, 1)");
}

std::vector<int64_t> GradualSchedule::steps() const {
  validate();
  std::vector<int64_t> out;
  for (int64_t t = start; t < end; t += frequency) out.push_back(t);
  out.push_back(end);
  return out;
}

bool GradualSchedule::is_step(int64_t t) const {
  if (t < start || t > end) return false;
  return t == end || (t - start) % frequency == 0;
}

bool GradualSchedule::any_step_in(int64_t begin, int64_t end) const {
  begin = std::max(begin, start);
  end = std::min(end, this->end + 1);
  if (begin >= end) return false;
  // The first step at or after begin: start + k·frequency rounded up, or t_end.
  const int64_t k = (begin - start + frequency - 1) / frequency;
  return std::min(start + k * frequency, this->end) < end;
}

double GradualSchedule::target(int64_t t) const {
  if (t <= start) return end == start && t == start ? final_sparsity : initial_sparsity;
  if (t >= end) return final_sparsity;
  const double progress = static_cast<double>(t - start) / static_cast<double>(end - start);
  const double r = 1.0 - progress;
  return final_sparsity + (initial_sparsity - final_sparsity) * r * r * r;
}

}  // namespace spruce::pruning
