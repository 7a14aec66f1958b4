// MaxPool2d: forwards through ops::max_pool2d.
#include "max_pool2d.h"

#include <string>

#include "../core/error.h"

namespace spruce {

MaxPool2d::MaxPool2d(const ops::Pool2dOptions& options) : options_(options) {
  if (options.kernel <= 0 || options.stride <= 0 || options.padding < 0 ||
      2 * options.padding > options.kernel)
    throw UsageError("MaxPool2d: invalid kernel " + std::to_string(options.kernel) + ", stride " +
                     std::to_string(options.stride) + ", padding " +
                     std::to_string(options.padding));
}

Tensor MaxPool2d::forward(const Tensor& x) { return ops::max_pool2d(x, options_); }

}  // namespace spruce
