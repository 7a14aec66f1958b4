// Central differences against the analytic gradient, on a random projection.
#include "gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "autograd.h"
#include "random.h"

namespace spruce {
namespace {
double project(const Tensor& out, const std::vector<double>& r) {
  double acc = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i) acc += static_cast<double>(out.data()[i]) * r[i];
  return acc;
}
}  // namespace

GradCheckResult grad_check(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                           std::vector<Tensor> inputs, const GradCheckOptions& options) {
  GradCheckResult result;
  Generator gen(options.seed);

  // Analytic pass: loss = sum(out * r), so d out = r.
  for (Tensor& t : inputs)
    if (t.requires_grad()) t.zero_grad();
  Tensor out = f(inputs);
  std::vector<double> r(static_cast<size_t>(out.numel()));
  Tensor seed = Tensor::empty(out.shape());
  for (int64_t i = 0; i < out.numel(); ++i) {
    seed.data()[i] = gen.uniform(-1.f, 1.f);
    r[i] = seed.data()[i];
  }
  if (!out.requires_grad()) {
    result.ok = false;
    result.message = "output does not require grad: no input was marked or the op recorded no node";
    return result;
  }
  out.backward(seed);

  NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    const Tensor analytic = x.grad().defined() ? x.grad().clone() : Tensor::zeros(x.shape());
    std::vector<int64_t> idx(static_cast<size_t>(x.numel()));
    std::iota(idx.begin(), idx.end(), 0);
    if (static_cast<int64_t>(idx.size()) > options.max_samples) {
      for (size_t i = 0; i < static_cast<size_t>(options.max_samples); ++i)  // partial Fisher-Yates
        std::swap(idx[i], idx[i + gen.below(idx.size() - i)]);
      idx.resize(static_cast<size_t>(options.max_samples));
    }
    for (int64_t i : idx) {
      // The pointer is taken afresh for every write, so each change bumps
      // x's content version (kernels may keep packed copies keyed on it).
      const float orig = x.data()[i];
      const double f0 = project(f(inputs), r);
      x.data()[i] = orig + options.eps;
      const double fp = project(f(inputs), r);
      x.data()[i] = orig - options.eps;
      const double fm = project(f(inputs), r);
      x.data()[i] = orig;
      const double eps = options.eps;
      if (options.kink_tolerance > 0) {
        const double right = (fp - f0) / eps, left = (f0 - fm) / eps;
        const double scale = std::max({std::abs(right), std::abs(left), 1e-3});
        if (std::abs(right - left) > options.kink_tolerance * scale + 10 * options.atol) {
          ++result.skipped;
          continue;
        }
      }
      const double numeric = (fp - fm) / (2 * eps);
      const double ana = analytic.data()[i];
      const double err = std::abs(numeric - ana);
      result.max_abs_error = std::max(result.max_abs_error, err);
      ++result.checked;
      if (err > options.atol + options.rtol * std::max(std::abs(numeric), std::abs(ana)) &&
          result.ok) {
        result.ok = false;
        std::ostringstream os;
        os << "input " << k << " " << shape_str(x.shape()) << " element " << i << ": numeric "
           << numeric << " vs analytic " << ana;
        result.message = os.str();
      }
    }
  }
  if (result.checked == 0 && result.ok) {
    result.ok = false;
    result.message = "no element was checked (all skipped or no input requires grad)";
  }
  return result;
}

}  // namespace spruce
