// Double-precision references shared by the pruning tests: dense Gauss-Jordan
// inverse and solve, the damped Fisher built directly from gradients, the
// equality-constrained quadratic minimum (OBS by brute force: the KKT system)
// and an error measure. Deliberately naive: they define "right".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace spruce::pruning::ref {

using Mat = std::vector<double>;  // row-major, square

/// x with A x = b, Gaussian elimination with partial pivoting; A: [n, n].
inline std::vector<double> solve(Mat a, std::vector<double> b, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    int64_t p = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(a[r * n + c]) > std::fabs(a[p * n + c])) p = r;
    if (a[p * n + c] == 0.0) throw std::runtime_error("ref::solve: singular");
    for (int64_t k = 0; k < n; ++k) std::swap(a[c * n + k], a[p * n + k]);
    std::swap(b[c], b[p]);
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r * n + c] / a[c * n + c];
      for (int64_t k = c; k < n; ++k) a[r * n + k] -= f * a[c * n + k];
      b[r] -= f * b[c];
    }
  }
  for (int64_t c = 0; c < n; ++c) b[c] /= a[c * n + c];
  return b;
}

/// A⁻¹, one solve per column. A: [n, n].
inline Mat inverse(const Mat& a, int64_t n) {
  Mat inv(static_cast<size_t>(n * n));
  for (int64_t j = 0; j < n; ++j) {
    std::vector<double> e(static_cast<size_t>(n), 0.0);
    e[j] = 1.0;
    const std::vector<double> x = solve(a, e, n);
    for (int64_t i = 0; i < n; ++i) inv[i * n + j] = x[i];
  }
  return inv;
}

/// λI + (1/m) Σ_i g_i g_iᵀ on columns [begin, begin + n) of a row-major
/// [m, ld] gradient matrix; columns with keep[j] == 0 are taken as zero.
inline Mat fisher(const float* g, int64_t m, int64_t ld, int64_t begin, int64_t n, double damp,
                  const std::vector<float>& keep = {}) {
  Mat f(static_cast<size_t>(n * n), 0.0);
  auto val = [&](int64_t s, int64_t j) {
    if (!keep.empty() && keep[begin + j] == 0.f) return 0.0;
    return static_cast<double>(g[s * ld + begin + j]);
  };
  for (int64_t s = 0; s < m; ++s)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) f[i * n + j] += val(s, i) * val(s, j) / m;
  for (int64_t i = 0; i < n; ++i) f[i * n + i] += damp;
  return f;
}

/// argmin_δ gᵀδ + ½ δᵀHδ subject to δ_q = −w_q for q ∈ Q, from the KKT system
/// [[H, E_Q], [E_Qᵀ, 0]] [δ; μ] = [−g; −w_Q]. H: [n, n], w: [n], g: [n] or
/// empty (zero: the OBS setting).
inline std::vector<double> constrained_minimiser(const Mat& h, int64_t n,
                                                 const std::vector<double>& w,
                                                 const std::vector<int64_t>& q,
                                                 const std::vector<double>& g = {}) {
  const int64_t k = static_cast<int64_t>(q.size()), nk = n + k;
  Mat kkt(static_cast<size_t>(nk * nk), 0.0);
  std::vector<double> rhs(static_cast<size_t>(nk), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) kkt[i * nk + j] = h[i * n + j];
    if (!g.empty()) rhs[i] = -g[i];
  }
  for (int64_t r = 0; r < k; ++r) {
    kkt[q[r] * nk + n + r] = 1.0;
    kkt[(n + r) * nk + q[r]] = 1.0;
    rhs[n + r] = -w[q[r]];
  }
  const std::vector<double> x = solve(kkt, rhs, nk);
  return {x.begin(), x.begin() + n};
}

/// ½ δᵀHδ.
inline double quadratic(const Mat& h, int64_t n, const std::vector<double>& delta) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) s += delta[i] * h[i * n + j] * delta[j];
  return 0.5 * s;
}

/// gᵀδ + ½ δᵀHδ: the second-order Taylor model of the loss change.
inline double taylor(const Mat& h, const std::vector<double>& g, int64_t n,
                     const std::vector<double>& delta) {
  double s = quadratic(h, n, delta);
  for (int64_t i = 0; i < n; ++i) s += g[i] * delta[i];
  return s;
}

/// max |a − ref| / max |ref| over n entries.
template <class T>
double max_rel_err(const T* a, const double* ref, int64_t n) {
  double err = 0.0, scale = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return err / scale;
}

}  // namespace spruce::pruning::ref
