// Module bookkeeping: registration, dotted-name traversal, state dicts, masks.
#include "module.h"

#include <map>

#include "../core/autograd.h"
#include "../core/error.h"
#include "../core/ops/elementwise.h"

namespace spruce {
namespace {
constexpr std::string_view kMaskSuffix = "_mask";

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

bool ends_with_mask_suffix(std::string_view name) {
  return name.size() > kMaskSuffix.size() && name.ends_with(kMaskSuffix);
}

/// Throws unless every value is exactly 0 or 1.
void check_binary(const Tensor& mask, const std::string& what) {
  for (float v : mask.span())
    if (v != 0.f && v != 1.f)
      throw UsageError(what + ": mask values must be 0 or 1, found " + std::to_string(v));
}
}  // namespace

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative matcher with single-star backtracking: linear for typical patterns.
  size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// ---- registration ----

void Module::check_new_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos)
    throw UsageError("module entry name '" + name + "' must be non-empty without '.'");
  if (ends_with_mask_suffix(name))
    throw UsageError("module entry name '" + name + "': the suffix _mask is reserved for masks");
  for (const Param& p : params_)
    if (p.name == name) throw UsageError("duplicate name '" + name + "' (a parameter)");
  for (const Buffer& b : buffers_)
    if (b.name == name) throw UsageError("duplicate name '" + name + "' (a buffer)");
  for (const Child& c : children_)
    if (c.name == name) throw UsageError("duplicate name '" + name + "' (a child)");
}

Tensor Module::register_parameter(std::string name, Tensor value, Prunable prunable) {
  check_new_name(name);
  if (!value.defined()) throw UsageError("parameter '" + name + "' is undefined");
  value.set_requires_grad(true);
  Param p;
  p.name = std::move(name), p.value = value, p.prunable = prunable;
  params_.push_back(std::move(p));
  return value;
}

Tensor Module::register_buffer(std::string name, Tensor value, IfMissing if_missing) {
  check_new_name(name);
  if (!value.defined()) throw UsageError("buffer '" + name + "' is undefined");
  buffers_.push_back({std::move(name), value, if_missing});
  return value;
}

void Module::add_child(std::string name, std::unique_ptr<Module> module) {
  check_new_name(name);
  if (!module) throw UsageError("child '" + name + "' is null");
  module->train(training_);
  children_.push_back({std::move(name), std::move(module)});
}

// ---- traversal ----

void Module::collect_parameters(const std::string& prefix, NamedTensors& out) const {
  for (const Param& p : params_) out.emplace_back(join(prefix, p.name), p.value);
  for (const Child& c : children_) c.module->collect_parameters(join(prefix, c.name), out);
}

void Module::collect_buffers(const std::string& prefix, NamedTensors& out) const {
  for (const Buffer& b : buffers_) out.emplace_back(join(prefix, b.name), b.value);
  for (const Param& p : params_)
    if (p.mask.defined()) out.emplace_back(join(prefix, p.name + std::string(kMaskSuffix)), p.mask);
  for (const Child& c : children_) c.module->collect_buffers(join(prefix, c.name), out);
}

void Module::collect_may_be_missing(const std::string& prefix, std::set<std::string>& out) const {
  for (const Buffer& b : buffers_)
    if (b.if_missing == IfMissing::kKeep) out.insert(join(prefix, b.name));
  for (const Child& c : children_) c.module->collect_may_be_missing(join(prefix, c.name), out);
}

void Module::collect_state(const std::string& prefix, NamedTensors& out) const {
  for (const Param& p : params_) out.emplace_back(join(prefix, p.name), p.value.detach());
  for (const Buffer& b : buffers_) out.emplace_back(join(prefix, b.name), b.value.detach());
  for (const Param& p : params_)
    if (p.mask.defined())
      out.emplace_back(join(prefix, p.name + std::string(kMaskSuffix)), p.mask.detach());
  for (const Child& c : children_) c.module->collect_state(join(prefix, c.name), out);
}

void Module::collect_masks(const std::string& prefix, NamedTensors& out) const {
  for (const Param& p : params_)
    if (p.mask.defined()) out.emplace_back(join(prefix, p.name), p.mask);
  for (const Child& c : children_) c.module->collect_masks(join(prefix, c.name), out);
}

void Module::collect_prunable(const std::string& prefix, std::vector<std::string>& out) const {
  for (const Param& p : params_)
    if (p.prunable == Prunable::kYes) out.push_back(join(prefix, p.name));
  for (const Child& c : children_) c.module->collect_prunable(join(prefix, c.name), out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect_parameters("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect_buffers("", out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() const {
  std::vector<std::pair<std::string, Module*>> out;
  for (const Child& c : children_) out.emplace_back(c.name, c.module.get());
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::pair<const Module*, std::string> Module::resolve(const std::string& dotted) const {
  const Module* m = this;
  size_t start = 0;
  for (size_t dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', start)) {
    const std::string_view part(dotted.data() + start, dot - start);
    const Module* next = nullptr;
    for (const Child& c : m->children_)
      if (c.name == part) next = c.module.get();
    if (!next) return {nullptr, ""};
    m = next;
    start = dot + 1;
  }
  return {m, dotted.substr(start)};
}

const Module::Param* Module::find_param(std::string_view local) const {
  for (const Param& p : params_)
    if (p.name == local) return &p;
  return nullptr;
}

Module::Param& Module::param_slot(const std::string& dotted, const char* what) {
  auto [owner, local] = resolve(dotted);
  const Param* p = owner ? owner->find_param(local) : nullptr;
  if (!p) throw UsageError(std::string(what) + ": no parameter named '" + dotted + "'");
  return const_cast<Param&>(*p);
}

Tensor Module::parameter(const std::string& name) const {
  auto [owner, local] = resolve(name);
  const Param* p = owner ? owner->find_param(local) : nullptr;
  if (!p) throw UsageError("no parameter named '" + name + "'");
  return p->value;
}

Tensor Module::buffer(const std::string& name) const {
  for (auto& [key, t] : named_buffers())
    if (key == name) return t;
  throw UsageError("no buffer named '" + name + "'");
}

Module& Module::submodule(const std::string& path) {
  auto [owner, last] = resolve(path);
  if (owner)
    for (const Child& c : owner->children_)
      if (c.name == last) return *c.module;
  throw UsageError("no submodule named '" + path + "'");
}

// ---- mode ----

void Module::train(bool on) {
  training_ = on;
  for (Child& c : children_) c.module->train(on);
}

void Module::zero_grad() {
  for (Tensor& t : parameters()) t.zero_grad();
}

// ---- state ----

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect_state("", out);
  return out;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  const NamedTensors own = state_dict();
  std::map<std::string, const Tensor*> expected;
  for (const auto& [key, t] : own) expected.emplace(key, &t);

  // Validate everything first, so a bad checkpoint leaves the module untouched.
  std::vector<std::pair<const Tensor*, const Tensor*>> copies;   // (destination, source)
  std::vector<std::pair<std::string, const Tensor*>> new_masks;  // (parameter, source)
  std::map<std::string, bool> seen;
  for (const auto& [key, src] : state) {
    if (!seen.emplace(key, true).second)
      throw FormatError("load_state_dict: duplicate key '" + key + "'");
    if (!src.defined()) throw FormatError("load_state_dict: key '" + key + "' holds no tensor");
    const Tensor* target = nullptr;
    if (auto it = expected.find(key); it != expected.end()) {
      target = it->second;
      copies.emplace_back(target, &src);
    } else if (ends_with_mask_suffix(key)) {
      const std::string param = key.substr(0, key.size() - kMaskSuffix.size());
      auto [owner, local] = resolve(param);
      const Param* p = owner ? owner->find_param(local) : nullptr;
      if (p && p->prunable == Prunable::kYes) {
        target = &p->value;
        new_masks.emplace_back(param, &src);
      }
    }
    if (!target) {
      if (strict) throw FormatError("load_state_dict: unexpected key '" + key + "'");
      continue;
    }
    if (src.shape() != target->shape())
      throw FormatError("load_state_dict: shape mismatch for '" + key + "': given " +
                        shape_str(src.shape()) + ", module has " + shape_str(target->shape()));
    if (ends_with_mask_suffix(key)) {
      try {
        check_binary(src, key);
      } catch (const UsageError& e) {
        throw FormatError(std::string("load_state_dict: ") + e.what());
      }
    }
  }
  if (strict) {
    std::set<std::string> may_be_missing;
    collect_may_be_missing("", may_be_missing);
    for (const auto& [key, t] : own)
      if (!seen.count(key) && !may_be_missing.count(key))
        throw FormatError("load_state_dict: missing key '" + key + "'");
  }

  for (auto& [dst, src] : copies) const_cast<Tensor*>(dst)->copy_from(*src);
  for (auto& [param, src] : new_masks) set_mask(param, *src);
}

// ---- pruning hooks ----

std::vector<std::string> Module::prunable_parameter_names() const {
  std::vector<std::string> out;
  collect_prunable("", out);
  return out;
}

std::vector<std::string> Module::prunable_parameter_names(
    const std::vector<std::string>& patterns) const {
  std::vector<std::string> out;
  for (std::string& name : prunable_parameter_names()) {
    for (const std::string& pattern : patterns) {
      if (glob_match(pattern, name)) {
        out.push_back(std::move(name));
        break;
      }
    }
  }
  return out;
}

void Module::set_mask(const std::string& param_name, const Tensor& mask) {
  Param& p = param_slot(param_name, "set_mask");
  if (p.prunable != Prunable::kYes)
    throw UsageError("set_mask: parameter '" + param_name + "' is not prunable");
  if (!mask.defined() || mask.shape() != p.value.shape())
    throw UsageError("set_mask: mask for '" + param_name + "' must have shape " +
                     shape_str(p.value.shape()) +
                     (mask.defined() ? ", got " + shape_str(mask.shape()) : ""));
  check_binary(mask, "set_mask '" + param_name + "'");
  if (p.mask.defined()) {
    p.mask.copy_from(mask);  // keep the buffer's identity for holders of its handle
  } else {
    p.mask = mask.clone();
  }
}

bool Module::has_mask(const std::string& param_name) const { return mask(param_name).defined(); }

Tensor Module::mask(const std::string& param_name) const {
  auto [owner, local] = resolve(param_name);
  const Param* p = owner ? owner->find_param(local) : nullptr;
  if (!p) throw UsageError("mask: no parameter named '" + param_name + "'");
  return p->mask;
}

void Module::remove_mask(const std::string& param_name) {
  param_slot(param_name, "remove_mask").mask = Tensor();
}

NamedTensors Module::named_masks() const {
  NamedTensors out;
  collect_masks("", out);
  return out;
}

void Module::apply_masks() {
  for (auto& [name, mask] : named_masks()) {
    float* w = parameter(name).data();
    const float* m = mask.data();
    for (int64_t i = 0; i < mask.numel(); ++i)
      if (m[i] == 0.f) w[i] = 0.f;  // exactly +0, never -0
  }
}

Tensor Module::masked_parameter(std::string_view name) const {
  const Param* p = find_param(name);
  if (!p) throw UsageError("masked_parameter: no parameter named '" + std::string(name) + "'");
  if (!p->mask.defined()) return p->value;
  if (grad_mode_enabled()) return ops::mul_mask(p->value, p->mask);  // a graph node each call
  const ContentVersion value = p->value.content_version(), mask = p->mask.content_version();
  if (!p->masked.defined() || value != p->masked_value || mask != p->masked_mask) {
    p->masked = ops::mul_mask(p->value, p->mask);
    p->masked_value = value, p->masked_mask = mask;
  }
  return p->masked;
}

}  // namespace spruce
