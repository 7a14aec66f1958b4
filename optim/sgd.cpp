// SGD update (equations in sgd.h). Arithmetic is float32 with the
// coefficients rounded to float once, the order of operations PyTorch's
// single-tensor CPU path uses.
#include "sgd.h"

#include <sstream>

#include "../core/error.h"
#include "../core/parallel.h"

namespace spruce::optim {

namespace {

// A double as a message shows it: "0.1", not "0.100000".
std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void check_options(const SgdOptions& o) {
  if (!(o.lr >= 0.0)) throw UsageError("SGD: lr is " + num(o.lr) + " (expected >= 0)");
  if (!(o.momentum >= 0.0))
    throw UsageError("SGD: momentum is " + num(o.momentum) + " (expected >= 0)");
  if (!(o.weight_decay >= 0.0))
    throw UsageError("SGD: weight_decay is " + num(o.weight_decay) + " (expected >= 0)");
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
    throw UsageError("SGD: nesterov needs momentum > 0 and dampening 0 (got momentum " +
                     num(o.momentum) + ", dampening " + num(o.dampening) + ")");
}

// Below this many elements a parameter is updated on one thread.
constexpr int64_t kGrain = 1 << 15;

}  // namespace

Sgd::Sgd(NamedTensors params, SgdOptions options)
    : params_(std::move(params)),
      velocity_(params_.size()),
      masks_(params_.size()),
      options_(options) {
  check_options(options_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    if (!p.defined()) throw UsageError("SGD: parameter '" + name + "' is undefined");
    if (!index_.emplace(name, i).second)
      throw UsageError("SGD: duplicate parameter name '" + name + "'");
  }
}

void Sgd::set_lr(double lr) {
  if (!(lr >= 0.0)) throw UsageError("SGD: lr is " + num(lr) + " (expected >= 0)");
  options_.lr = lr;
}

void Sgd::step() {
  const float lr = static_cast<float>(options_.lr);
  const float wd = static_cast<float>(options_.weight_decay);
  const float mom = static_cast<float>(options_.momentum);
  const float keep = static_cast<float>(1.0 - options_.dampening);
  const bool use_momentum = options_.momentum != 0.0;
  const bool nesterov = options_.nesterov;

  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    const Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    float* w = p.data();
    const float* dw = grad.data();
    // PyTorch's first step copies the (decayed) gradient into the buffer
    // instead of applying momentum and dampening.
    const bool first = use_momentum && !velocity_[i].defined();
    if (first) velocity_[i] = Tensor::empty(p.shape());
    float* buf = use_momentum ? velocity_[i].data() : nullptr;
    parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        float g = dw[k];
        if (wd != 0.f) g = g + wd * w[k];
        if (buf) {
          buf[k] = first ? g : mom * buf[k] + keep * g;
          g = nesterov ? g + mom * buf[k] : buf[k];
        }
        w[k] = w[k] - lr * g;
      }
    });
  }
  ++steps_;
  apply_masks();
  for (auto& hook : hooks_) hook(*this);
}

void Sgd::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

size_t Sgd::index_of(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw UsageError("SGD: no parameter named '" + name + "'");
  return it->second;
}

Tensor Sgd::velocity(const std::string& name) const { return velocity_[index_of(name)]; }

NamedTensors Sgd::state() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (velocity_[i].defined()) out.emplace_back(params_[i].first, velocity_[i]);
  return out;
}

void Sgd::load_state(const NamedTensors& state, int64_t steps, const std::string& source) {
  // Validate everything first so a bad state leaves the optimizer unchanged.
  std::vector<Tensor> fresh(params_.size());
  for (const auto& [name, v] : state) {
    const auto it = index_.find(name);
    if (it == index_.end())
      throw FormatError(source + ": velocity for unknown parameter '" + name + "'");
    const Tensor& p = params_[it->second].second;
    if (!v.defined() || v.shape() != p.shape())
      throw FormatError(source + ": velocity of '" + name + "' has shape " +
                        (v.defined() ? shape_str(v.shape()) : std::string("undefined")) +
                        ", parameter has " + shape_str(p.shape()));
    if (fresh[it->second].defined())
      throw FormatError(source + ": duplicate velocity for '" + name + "'");
    fresh[it->second] = v.clone();
  }
  if (steps < 0)
    throw FormatError(source + ": step count " + std::to_string(steps) + " (expected >= 0)");
  velocity_ = std::move(fresh);
  steps_ = steps;
}

void Sgd::add_post_step_hook(PostStepHook hook) { hooks_.push_back(std::move(hook)); }

void Sgd::set_masks(const NamedTensors& masks) {
  std::vector<Tensor> fresh(params_.size());
  for (const auto& [name, mask] : masks) {
    const size_t i = index_of(name);
    if (!mask.defined() || mask.numel() != params_[i].second.numel())
      throw UsageError("SGD: mask of '" + name + "' has " +
                       (mask.defined() ? std::to_string(mask.numel()) : std::string("no")) +
                       " elements, parameter has " + std::to_string(params_[i].second.numel()));
    fresh[i] = mask;
  }
  masks_ = std::move(fresh);
}

void Sgd::apply_masks() {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!masks_[i].defined()) continue;
    const float* m = masks_[i].data();
    float* w = params_[i].second.data();
    float* v = velocity_[i].defined() ? velocity_[i].data() : nullptr;
    for (int64_t k = 0; k < masks_[i].numel(); ++k)
      if (m[k] == 0.f) {
        w[k] = 0.f;  // exactly +0, never -0
        if (v) v[k] = 0.f;
      }
  }
}

void Sgd::reset_momentum() {
  for (auto& v : velocity_) v = Tensor();
}

}  // namespace spruce::optim
