// Sequential: a chain of modules applied in order, children named "0", "1", ...
// as in PyTorch's nn.Sequential (so "shortcut.0.weight" is the first child's weight).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "module.h"

namespace spruce {

/// x -> m_{k-1}(... m_1(m_0(x))); an empty Sequential is the identity.
/// Shapes are those of the chained modules.
class Sequential : public Module {
 public:
  Sequential() = default;
  /// Adopts the modules in order.
  explicit Sequential(std::vector<std::unique_ptr<Module>> modules);

  /// Appends a module as child "<size()>" and returns a reference to it.
  template <class M>
  M& push_back(std::unique_ptr<M> module) {
    M& ref = register_module(std::to_string(modules_.size()), std::move(module));
    modules_.push_back(&ref);
    return ref;
  }
  /// Constructs a module in place at the end: seq.emplace_back<ReLU>().
  template <class M, class... Args>
  M& emplace_back(Args&&... args) {
    return push_back(std::make_unique<M>(std::forward<Args>(args)...));
  }

  Tensor forward(const Tensor& x) override;

  int64_t size() const { return static_cast<int64_t>(modules_.size()); }
  /// The i-th module (bounds checked).
  Module& operator[](int64_t i) const;

 private:
  std::vector<Module*> modules_;  // non-owning, in order; the base owns them
};

}  // namespace spruce
