// Sequential: registers children by index and chains their forwards.
#include "sequential.h"

#include <string>

#include "../core/error.h"

namespace spruce {

Sequential::Sequential(std::vector<std::unique_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor out = x;
  for (Module* m : modules_) out = m->forward(out);
  return out;
}

Module& Sequential::operator[](int64_t i) const {
  if (i < 0 || i >= size())
    throw UsageError("Sequential: index " + std::to_string(i) + " out of range for " +
                     std::to_string(size()) + " modules");
  return *modules_[static_cast<size_t>(i)];
}

}  // namespace spruce
