// Block Fisher inverses. The kernels work on column-major double matrices:
// a panel of the gradient bank copied as [m, width] row-major is, unchanged,
// the column-major width×m matrix [g_1 … g_m], and a block's G = the n rows
// of it starting at the block's column (leading dimension width).
#include "woodbury.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "../core/error.h"
#include "block_parallel.h"
#include "lapack.h"

namespace spruce::pruning {
namespace {

/// Scratch buffers reused across the blocks handled by one worker.
struct Workspace {
  std::vector<double> keep, gt, a, b, lower, sums;
  static double* sized(std::vector<double>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }
};

void cholesky_lower(double* a, int64_t n, const char* what) {
  const int ni = static_cast<int>(n);
  int info = 0;
  dpotrf_("L", &ni, a, &ni, &info);
  if (info != 0)
    throw NumericalError(std::string("woodbury: ") + what +
                         " is not positive definite (potrf info " + std::to_string(info) +
                         "); increase the damping λ");
}

/// Cholesky (lower) of the SPD q×q matrix a. A_QQ of a dense block was
/// stored in float: with a tiny λ the rounding can leave it barely
/// indefinite, so retry with a growing relative jitter before giving up.
void cholesky_jittered(double* a, int64_t q) {
  const int qi = static_cast<int>(q);
  std::vector<double> original(a, a + q * q);
  double max_diag = 0.0;
  for (int64_t i = 0; i < q; ++i) max_diag = std::max(max_diag, a[i * (q + 1)]);
  for (double jitter : {0.0, 1e-12, 1e-10, 1e-8, 1e-6}) {
    std::copy(original.begin(), original.end(), a);
    for (int64_t i = 0; i < q; ++i) a[i * (q + 1)] += jitter * max_diag;
    int info = 0;
    dpotrf_("L", &qi, a, &qi, &info);
    if (info == 0) return;
  }
  throw NumericalError("woodbury: [F⁻¹]_QQ of " + std::to_string(q) +
                       " weights is not positive definite; increase the damping λ");
}

/// x = A⁻¹ x for a Cholesky-factored (lower) q×q matrix.
void cholesky_solve(const double* l, int64_t q, double* x) {
  const int qi = static_cast<int>(q), one = 1;
  int info = 0;
  dpotrs_("L", &qi, &one, l, &qi, x, &qi, &info);
}

void set_scaled_identity(double* a, int64_t n, double value) {
  std::fill_n(a, n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) a[i * (n + 1)] = value;
}

/// out [n, n] float, row-major = the symmetric matrix whose lower triangle
/// (column-major) is in a. That triangle, read row-major, is the upper one,
/// so it is copied row by row; the lower half is then mirrored tile by tile
/// (a plain transpose would miss the cache on every element for c ~ 1000).
void store_symmetric(const double* a, int64_t n, float* out) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = r; i < n; ++i) out[r * n + i] = static_cast<float>(a[r * n + i]);
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < n; r0 += kTile)
    for (int64_t c0 = 0; c0 <= r0; c0 += kTile)
      for (int64_t r = r0; r < std::min(r0 + kTile, n); ++r)
        for (int64_t c = c0; c < std::min(c0 + kTile, r); ++c) out[r * n + c] = out[c * n + r];
}

// F = λI + GGᵀ/m, then F⁻¹ from its Cholesky factor; lower triangle into out.
// G is column-major n×m with leading dimension ldg, here and below.
void inverse_direct(const double* g, int64_t ldg, int64_t m, int64_t n, double damp, double* out) {
  if (n == 1) {  // c = 1, the diagonal: three LAPACK calls would cost more than the math
    double sum = 0.0;
    for (int64_t i = 0; i < m; ++i) sum += g[i * ldg] * g[i * ldg];
    out[0] = 1.0 / (damp + sum / m);
    return;
  }
  set_scaled_identity(out, n, damp);
  cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, m, 1.0 / m, g, ldg, 1.0, out, n);
  cholesky_lower(out, n, "λI + GGᵀ/m");
  const int ni = static_cast<int>(n);
  int info = 0;
  dpotri_("L", &ni, out, &ni, &info);
  if (info != 0) throw NumericalError("woodbury: potri failed (info " + std::to_string(info) + ")");
}

// The recursion, k gradients per step: U = F⁻¹G_k, S = mI + G_kᵀU = LLᵀ,
// V = U L⁻ᵀ, F⁻¹ ← F⁻¹ − VVᵀ. Only the lower triangle of out is kept.
void inverse_recursion(const double* g, int64_t ldg, int64_t m, int64_t n, double damp,
                       int64_t chunk, double* out, Workspace& ws) {
  set_scaled_identity(out, n, 1.0 / damp);
  double* u = Workspace::sized(ws.b, n * chunk);
  double* s = Workspace::sized(ws.a, chunk * chunk);
  for (int64_t j0 = 0; j0 < m; j0 += chunk) {
    const int64_t k = std::min(chunk, m - j0);
    const double* gk = g + j0 * ldg;  // n×k
    cblas_dsymm(CblasColMajor, CblasLeft, CblasLower, n, k, 1.0, out, n, gk, ldg, 0.0, u, n);
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, k, k, n, 1.0, gk, ldg, u, n, 0.0, s, k);
    for (int64_t i = 0; i < k; ++i) s[i * (k + 1)] += static_cast<double>(m);
    cholesky_lower(s, k, "mI + GᵀF⁻¹G");
    cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, k, 1.0, s, k, u,
                n);
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, k, -1.0, u, n, 1.0, out, n);
  }
}

// F⁻¹ = λ⁻¹(I − G K⁻¹ Gᵀ), K = mλI + GᵀG = LLᵀ, so F⁻¹ = λ⁻¹(I − BBᵀ) with
// B = G L⁻ᵀ. Writes B row-major [n, m] to factor and F⁻¹'s diagonal to diag.
void inverse_gram(const double* g, int64_t ldg, int64_t m, int64_t n, double damp, double* factor,
                  float* diag, Workspace& ws) {
  std::vector<double> norms(static_cast<size_t>(n), 0.0);  // ‖B_q‖²
  if (m > 0) {
    double* k = Workspace::sized(ws.a, m * m);
    set_scaled_identity(k, m, m * damp);
    cblas_dsyrk(CblasColMajor, CblasLower, CblasTrans, m, n, 1.0, g, ldg, 1.0, k, m);
    cholesky_lower(k, m, "mλI + GᵀG");
    double* b = Workspace::sized(ws.b, n * m);  // column-major n×m
    for (int64_t c = 0; c < m; ++c) std::copy_n(g + c * ldg, n, b + c * n);
    cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, m, 1.0, k, m, b,
                n);
    for (int64_t c = 0; c < m; ++c)
      for (int64_t i = 0; i < n; ++i) {
        factor[i * m + c] = b[i + c * n];
        norms[i] += b[i + c * n] * b[i + c * n];
      }
  }
  for (int64_t i = 0; i < n; ++i) diag[i] = static_cast<float>((1.0 - norms[i]) / damp);
}

/// λ_b: the requested λ, raised to kDampFloor × the block's largest Fisher
/// diagonal entry (GGᵀ/m)_qq when it is below that (see woodbury.h).
double damp_for_block(const double* g, int64_t ldg, int64_t m, int64_t n, double damp,
                      double relative_damp, Workspace& ws, char* raised) {
  if (m == 0) return damp;
  double* sums = Workspace::sized(ws.sums, n);
  std::fill_n(sums, n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t q = 0; q < n; ++q) sums[q] += g[q + i * ldg] * g[q + i * ldg];
  const double max_diag = *std::max_element(sums, sums + n) / static_cast<double>(m);
  if (relative_damp > 0)  // + relative_damp × the mean Fisher diagonal entry of the block
    damp += relative_damp * std::accumulate(sums, sums + n, 0.0) / static_cast<double>(m * n);
  *raised = damp < kDampFloor * max_diag;
  return std::max(damp, kDampFloor * max_diag);
}

void check_options(double damp, int64_t chunk) {
  if (!(damp >= kMinDamp && damp <= kMaxDamp))
    throw UsageError("woodbury: damping λ = " + std::to_string(damp) +
                     ", expected a value in [1e-30, 1e30]");
  if (chunk < 1) throw UsageError("woodbury: chunk " + std::to_string(chunk) + ", expected >= 1");
}

}  // namespace

void BlockInverse::gather(int64_t b, std::span<const int64_t> idx, double* out) const {
  const int64_t n = blocks_[b].size(), q = static_cast<int64_t>(idx.size());
  if (!factored(b)) {
    const float* a = dense_.data() + offset_[b];
    for (int64_t r = 0; r < q; ++r)
      for (int64_t s = 0; s < q; ++s) out[r * q + s] = a[idx[r] * n + idx[s]];
    return;
  }
  // λ⁻¹(I − B_Q B_Qᵀ)
  const int64_t m = rank_;
  std::fill_n(out, q * q, 0.0);
  if (m > 0 && q > 0) {
    const double* f = factor_.data() + offset_[b];
    std::vector<double> bq(static_cast<size_t>(q * m));  // rows idx of B, [q, m]
    for (int64_t r = 0; r < q; ++r) std::copy_n(f + idx[r] * m, m, bq.begin() + r * m);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, q, m, -1.0 / block_damp(b), bq.data(), m,
                0.0, out, q);
    for (int64_t r = 0; r < q; ++r)
      for (int64_t s = r + 1; s < q; ++s) out[r * q + s] = out[s * q + r];
  }
  for (int64_t r = 0; r < q; ++r) out[r * (q + 1)] += 1.0 / block_damp(b);
}

void BlockInverse::solve(int64_t b, std::span<const int64_t> idx, double* rhs) const {
  const int64_t q = static_cast<int64_t>(idx.size()), m = rank_;
  if (q == 0) return;
  if (factored(b) && q > m) {
    // (A_QQ)⁻¹ = λ(I + B_Q C⁻¹ B_Qᵀ), C = I_m − B_QᵀB_Q: an m×m system instead of q×q.
    const double* f = factor_.data() + offset_[b];
    std::vector<double> bq(static_cast<size_t>(q * m)), c(static_cast<size_t>(m * m)),
        t(static_cast<size_t>(m));
    for (int64_t r = 0; r < q; ++r) std::copy_n(f + idx[r] * m, m, bq.begin() + r * m);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, m, q, -1.0, bq.data(), m, 0.0, c.data(), m);
    for (int64_t i = 0; i < m; ++i) {
      c[i * (m + 1)] += 1.0;
      for (int64_t j = i + 1; j < m; ++j) c[i * m + j] = c[j * m + i];
    }
    int info = 0;
    const int mi = static_cast<int>(m);
    dpotrf_("L", &mi, c.data(), &mi, &info);
    if (info == 0) {
      cblas_dgemv(CblasRowMajor, CblasTrans, q, m, 1.0, bq.data(), m, rhs, 1, 0.0, t.data(), 1);
      cholesky_solve(c.data(), m, t.data());
      cblas_dgemv(CblasRowMajor, CblasNoTrans, q, m, 1.0, bq.data(), m, t.data(), 1, 1.0, rhs, 1);
      for (int64_t r = 0; r < q; ++r) rhs[r] *= block_damp(b);
      return;
    }
    // ‖B_Q‖ rounded to 1: fall through to the direct q×q solve with jitter.
  }
  std::vector<double> a(static_cast<size_t>(q * q));
  gather(b, idx, a.data());
  cholesky_jittered(a.data(), q);
  cholesky_solve(a.data(), q, rhs);
}

void BlockInverse::multiply(int64_t b, std::span<const int64_t> idx, const double* y,
                            double* out) const {
  const int64_t n = blocks_[b].size(), q = static_cast<int64_t>(idx.size());
  std::fill_n(out, n, 0.0);
  if (!factored(b)) {  // rows idx of a symmetric matrix = its columns idx
    const float* a = dense_.data() + offset_[b];
    for (int64_t r = 0; r < q; ++r) {
      const float* row = a + idx[r] * n;
      for (int64_t j = 0; j < n; ++j) out[j] += y[r] * row[j];
    }
    return;
  }
  // λ⁻¹(ỹ − B (B_Qᵀ y)), ỹ = y scattered to idx
  const int64_t m = rank_;
  if (m > 0) {
    const double* f = factor_.data() + offset_[b];
    std::vector<double> t(static_cast<size_t>(m), 0.0);
    for (int64_t r = 0; r < q; ++r)
      for (int64_t k = 0; k < m; ++k) t[k] += y[r] * f[idx[r] * m + k];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, n, m, -1.0 / block_damp(b), f, m, t.data(), 1, 0.0,
                out, 1);
  }
  for (int64_t r = 0; r < q; ++r) out[idx[r]] += y[r] / block_damp(b);
}

std::vector<float> BlockInverse::dense(int64_t b) const {
  const int64_t n = blocks_[b].size();
  if (!factored(b)) {
    const float* a = dense_.data() + offset_[b];
    return {a, a + n * n};
  }
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  std::vector<double> full(static_cast<size_t>(n * n));
  gather(b, all, full.data());
  return {full.begin(), full.end()};
}

std::vector<int64_t> BlockInverse::raised_blocks() const {
  std::vector<int64_t> out;
  for (int64_t b = 0; b < num_blocks(); ++b)
    if (raised_[static_cast<size_t>(b)]) out.push_back(b);
  return out;
}

int64_t BlockInverse::memory_bytes() const {
  return static_cast<int64_t>(dense_.size() * sizeof(float) + factor_.size() * sizeof(double) +
                              diag_.size() * sizeof(float));
}

InverseMethod cheapest_method(int64_t m, int64_t n) {
  // Gram (factored): ~m²n flops and n·m doubles; Direct: ~n²m/2 + n³/2 flops
  // and n² floats. With 2m <= n the factor wins on both counts.
  return 2 * m <= n ? InverseMethod::kGram : InverseMethod::kDirect;
}

BlockInverseBuilder::BlockInverseBuilder(int64_t m, int64_t d, std::vector<Block> blocks,
                                         const InverseOptions& options, std::span<const float> mask)
    : options_(options), mask_(mask) {
  check_options(options.damp, options.chunk);
  BlockInverse& inv = inv_;
  inv.blocks_ = std::move(blocks);
  inv.damp_ = options.damp;
  inv.block_damp_.assign(inv.blocks_.size(), options.damp);
  inv.raised_.assign(inv.blocks_.size(), 0);
  inv.rank_ = m;
  int64_t expect = 0, dense_size = 0, factor_size = 0;
  for (const Block& blk : inv.blocks_) {
    if (blk.begin != expect || blk.end <= blk.begin)
      throw UsageError("block_fisher_inverse: block [" + std::to_string(blk.begin) + ", " +
                       std::to_string(blk.end) + ") does not continue at " +
                       std::to_string(expect));
    expect = blk.end;
    const int64_t n = blk.size();
    InverseMethod method =
        options.method == InverseMethod::kAuto ? cheapest_method(m, n) : options.method;
    if (m == 0) method = InverseMethod::kGram;  // F⁻¹ = I/λ: an empty factor
    const bool factored = method == InverseMethod::kGram;
    inv.factored_.push_back(factored);
    if (factored) {
      inv.offset_.push_back(factor_size);
      factor_size += n * m;
    } else {
      inv.offset_.push_back(dense_size);
      dense_size += n * n;
    }
  }
  if (expect != d)
    throw UsageError("block_fisher_inverse: blocks cover " + std::to_string(expect) +
                     " weights, gradients have " + std::to_string(d));
  if (!mask.empty() && static_cast<int64_t>(mask.size()) != d)
    throw UsageError("block_fisher_inverse: mask of " + std::to_string(mask.size()) +
                     " entries for " + std::to_string(d) + " weights");
  inv.dense_.resize(static_cast<size_t>(dense_size));
  inv.factor_.resize(static_cast<size_t>(factor_size));
  inv.diag_.resize(static_cast<size_t>(d));
}

void BlockInverseBuilder::add(int64_t b0, int64_t b1, std::span<const float* const> rows) {
  BlockInverse& inv = inv_;
  const int64_t m = inv.rank_;
  if (b0 < 0 || b1 > inv.num_blocks() || static_cast<int64_t>(rows.size()) != m)
    throw UsageError("BlockInverseBuilder: blocks [" + std::to_string(b0) + ", " +
                     std::to_string(b1) + ") of " + std::to_string(inv.num_blocks()) + " with " +
                     std::to_string(rows.size()) + " of " + std::to_string(m) + " gradients");
  if (b0 >= b1) return;
  const int64_t origin = inv.blocks_[b0].begin;  // the weight rows[i] points at
  // Panels: runs of consecutive blocks gathered from the bank together, so
  // that tiny blocks (c = 1 is the diagonal) do not each walk all m rows of
  // the bank for a few bytes.
  constexpr int64_t kPanelWidth = 256;
  std::vector<int64_t> panels;  // first block of each panel, then b1
  for (int64_t b = b0; b < b1; ++b)
    if (panels.empty() || inv.blocks_[b].end - inv.blocks_[panels.back()].begin > kPanelWidth)
      panels.push_back(b);
  panels.push_back(b1);
  const int64_t num_panels = static_cast<int64_t>(panels.size()) - 1;

  const std::span<const float> mask = mask_;
  const InverseOptions& options = options_;
  std::vector<Workspace> workspaces(static_cast<size_t>(block_workers(num_panels)));
  for_each_block(num_panels, [&](int64_t p, int worker) {
    Workspace& ws = workspaces[static_cast<size_t>(worker)];
    const int64_t begin = inv.blocks_[panels[p]].begin, end = inv.blocks_[panels[p + 1] - 1].end;
    const int64_t width = end - begin;
    double* keep = Workspace::sized(ws.keep, width);  // 1 kept, 0 pruned
    for (int64_t j = 0; j < width; ++j)
      keep[j] = (mask.empty() || mask[begin + j] != 0.f) ? 1.0 : 0.0;
    double* gt = Workspace::sized(ws.gt, m * width);  // [m, width]: the panel's columns of the bank
    for (int64_t i = 0; i < m; ++i) {
      const float* row = rows[i] + (begin - origin);
      for (int64_t j = 0; j < width; ++j) gt[i * width + j] = row[j] * keep[j];
    }
    for (int64_t b = panels[p]; b < panels[p + 1]; ++b) {
      const Block blk = inv.blocks_[b];
      const int64_t n = blk.size();
      const double* g = gt + (blk.begin - begin);  // column-major n×m, leading dimension width
      float* diag = inv.diag_.data() + blk.begin;
      const double damp = inv.block_damp_[b] =
          damp_for_block(g, width, m, n, options.damp, options.relative_damp, ws, &inv.raised_[b]);
      if (inv.factored(b)) {
        inverse_gram(g, width, m, n, damp, inv.factor_.data() + inv.offset_[b], diag, ws);
        continue;
      }
      double* lower = Workspace::sized(ws.lower, n * n);  // F⁻¹, lower triangle, column-major
      if (options.method == InverseMethod::kRecursion)
        inverse_recursion(g, width, m, n, damp, options.chunk, lower, ws);
      else
        inverse_direct(g, width, m, n, damp, lower);
      float* out = inv.dense_.data() + inv.offset_[b];
      store_symmetric(lower, n, out);
      for (int64_t i = 0; i < n; ++i) diag[i] = out[i * (n + 1)];
    }
  });
}

BlockInverse BlockInverseBuilder::finish() && {
  // With λ_b in range and finite gradients the diagonal lies in
  // [1/(λ_b + max F_qq), 1/λ_b]; anything else would give a wrong ρ silently.
  const std::vector<float>& diag = inv_.diag_;
  for (size_t q = 0; q < diag.size(); ++q)
    if (!(std::isfinite(diag[q]) && diag[q] > 0.f))
      throw NumericalError(
          "woodfisher: [F⁻¹]_qq of weight " + std::to_string(q) + " is " + std::to_string(diag[q]) +
          ", not a positive float: are the Fisher gradients finite and below ~1e15?");
  return std::move(inv_);
}

BlockInverse block_fisher_inverse(const GradientBank& grads, std::vector<Block> blocks,
                                  const InverseOptions& options, std::span<const float> mask) {
  const int64_t d = grads.dim(), m = grads.rows();
  BlockInverseBuilder builder(m, d, std::move(blocks), options, mask);
  std::vector<const float*> rows(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) rows[i] = grads.data() + i * d;
  const int64_t nb = static_cast<int64_t>(builder.num_blocks());
  builder.add(0, nb, rows);
  return std::move(builder).finish();
}

std::vector<double> woodbury_rank1_inverse(const float* gt, int64_t m, int64_t n, int64_t ld,
                                           double damp) {
  check_options(damp, 1);
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0), g(static_cast<size_t>(n)),
      u(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) inv[i * (n + 1)] = 1.0 / damp;
  for (int64_t s = 0; s < m; ++s) {
    for (int64_t j = 0; j < n; ++j) g[j] = gt[s * ld + j];
    double gu = 0.0;  // gᵀu
    for (int64_t i = 0; i < n; ++i) {
      double acc = 0.0;
      for (int64_t j = 0; j < n; ++j) acc += inv[i * n + j] * g[j];
      u[i] = acc;
      gu += g[i] * acc;
    }
    const double denom = static_cast<double>(m) + gu;
    for (int64_t i = 0; i < n; ++i) {
      const double ui = u[i] / denom;
      for (int64_t j = 0; j < n; ++j) inv[i * n + j] -= ui * u[j];
    }
  }
  return inv;
}

}  // namespace spruce::pruning
