// Sparse conv2d and linear inference (see sparse_conv2d.h).
//
// Every product is cast as out[row][q] = sum over a row's nonzeros of
// value * src[offset + q] over a grid of positions q, so one row kernel
// (sparse_spmm.h) serves all layers:
// - k x k convs, any stride s: a sample is copied into s x s zero-padded
//   phase planes (phase (a, b) holds padded pixel (s i + a, s j + b)), Hq x Wq
//   each. Output (oh, ow) under tap (c, kh, kw) then reads plane
//   (c, kh % s, kw % s) at (oh + kh / s, ow + kw / s): with grid position
//   q = oh Wq + ow, a fixed offset per tap plus q, for stride 2 as for 1. The
//   grid is Wq wide, the output OW <= Wq: the Wq - OW extra columns per row
//   (2 of 9 at 7x7, 2 of 30 at 28x28) are computed and dropped.
// - 1x1 stride-1 convs read the sample in place (q = pixel); when a sample
//   has few pixels (MobileNet's 4x4 and 2x2 layers) several samples are
//   copied side by side ([C][samples x pixels]) so a row spans more vector
//   lanes.
// - linear: the input transposed to [in][N]; q = sample.
// Convs run the grid kernel: each output is finished (scale, shift, residual,
// ReLU) and stored straight into NCHW, the grid's dropped columns skipped by
// the grid map. Only pointwise convs with samples side by side (and linear)
// write a row to a small per-thread buffer that this file's epilogue copies
// out.
//
// Order: a tile of grid positions at a time across all output rows, the tile
// sized so the input it reads stays in L1 while every row streams through it
// (row by row over the whole grid, the input came from L2 for each row).
//
// Packing: the phase planes' padding never changes, so each thread keeps a
// buffer per input layout, zeroed once, and a call writes only the pixels.
//
// Threads: batches split over groups of samples; a batch with fewer groups
// than threads (batch 1) splits the output rows instead.
//
// A basic block's two 3x3 convs (sparse_conv2d_pair_fused) run a sample
// through both: the first writes straight into the padded planes the second
// reads. At high sparsity these layers move more bytes than they multiply
// (16 channels of 28x28: 50 KB in and 50 KB out per sample for ~8 nonzeros
// per output channel), so keeping the middle activation in the cache, not
// writing it out, reading it back and packing it again, is what pays
// (FLOP-aware 95 % ResNet-20 B, batch 128: 1.20x the whole forward).
#include "sparse_conv2d.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "mac_counter.h"
#include "sparse_pack.h"
#include "sparse_spmm.h"

namespace spruce::ops {

namespace {

std::vector<float>& row_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

float* grown(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

/// The tensor's data, or null when it is undefined (an epilogue's optional parts).
const float* data_or_null(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

/// dst[i] = act(g[i] + res[i]) for i < n (res may be null).
inline void finish_run(const float* __restrict g, const float* __restrict res, bool relu, int64_t n,
                       float* __restrict dst) {
  if (res) {
    if (relu)
      for (int64_t i = 0; i < n; ++i) dst[i] = std::max(g[i] + res[i], 0.f);
    else
      for (int64_t i = 0; i < n; ++i) dst[i] = g[i] + res[i];
  } else if (relu) {
    for (int64_t i = 0; i < n; ++i) dst[i] = std::max(g[i], 0.f);
  } else {
    std::memcpy(dst, g, sizeof(float) * static_cast<size_t>(n));
  }
}

/// A conv's geometry and how its input is laid out for the row kernel.
struct ConvLayout {
  int64_t N, C, H, W, OC, KH, KW, s, pad, OH, OW;
  bool in_place = false;           // 1x1 stride 1 unpadded: planes of P = H W pixels
  int64_t group = 1;               // samples per grid (in place only)
  int64_t Hq = 0, Wq = 0, PS = 0;  // phase planes (otherwise)

  int64_t P() const { return OH * OW; }
  /// Grid positions for a group of `nb` samples.
  int64_t Q(int64_t nb) const { return in_place ? nb * P() : OH * Wq; }
  /// Floats of the packed input of one group (0 when read in place).
  int64_t packed_floats() const {
    if (!in_place) return C * s * s * PS + Wq + 32;
    return group > 1 ? C * group * P() : 0;
  }
  /// Grid positions per tile: as many as keep the input a tile reads (every
  /// channel's planes over the tile plus the taps' reach) within ~32 KiB of
  /// L1, a multiple of 128 (the AVX-512 kernel's register tile), at least 128.
  int64_t tile() const {
    const int64_t planes = in_place ? C : C * s * s;
    const int64_t reach = in_place ? 0 : (KH - 1) / s * Wq + (KW - 1) / s;
    const int64_t fit = (32 * 1024 / 4) / planes - reach;
    return std::max<int64_t>(128, fit / 128 * 128);
  }
  int32_t offset(int64_t col) const {
    const int64_t c = col / (KH * KW), kh = col / KW % KH, kw = col % KW;
    if (in_place) return static_cast<int32_t>(c * group * P());
    return static_cast<int32_t>(((c * s + kh % s) * s + kw % s) * PS + (kh / s) * Wq + kw / s);
  }
};

/// This thread's packing buffer for L's layout: zero where no pixel lands
/// (made zero once; packing writes pixels only).
float* pack_buffer(const ConvLayout& L) {
  struct Entry {
    int64_t key[6];
    std::vector<float> buf;
  };
  thread_local std::vector<Entry> entries;  // a model has a handful of layouts
  const int64_t key[6] = {L.C, L.H, L.W, L.s, L.pad, L.group};
  for (Entry& e : entries)
    if (std::equal(key, key + 6, e.key)) return e.buf.data();
  // At most 16 layouts and 64 MiB per thread (large images): the oldest go.
  constexpr size_t kMaxFloats = size_t{16} << 20;
  size_t held = static_cast<size_t>(L.packed_floats());
  for (const Entry& e : entries) held += e.buf.size();
  while (!entries.empty() && (entries.size() >= 16 || held > kMaxFloats)) {
    held -= entries.front().buf.size();
    entries.erase(entries.begin());
  }
  Entry& e = entries.emplace_back();
  std::copy(key, key + 6, e.key);
  e.buf.assign(static_cast<size_t>(L.packed_floats()), 0.f);
  return e.buf.data();
}

/// This thread's buffer for a fused pair's middle activation in L's layout,
/// zero where no pixel lands; apart from pack_buffer's, whose turnover must
/// not free it while the pair runs. Made anew (zero) when the layout changes.
float* middle_buffer(const ConvLayout& L) {
  thread_local std::vector<float> buf;
  thread_local int64_t held[3] = {-1, -1, -1};
  const int64_t key[3] = {L.C, L.H, L.W};  // stride 1, padding 1, one sample
  if (!std::equal(key, key + 3, held)) {
    std::copy(key, key + 3, held);
    buf.assign(static_cast<size_t>(L.packed_floats()), 0.f);
  }
  return buf.data();
}

/// Packs samples [n0, n0 + nb) of x for the row kernel; returns the source.
const float* pack(const ConvLayout& L, const float* x, int64_t n0, int64_t nb) {
  const int64_t P = L.H * L.W;
  if (L.in_place) {
    if (L.group == 1) return x + n0 * L.C * P;
    float* buf = pack_buffer(L);
    for (int64_t c = 0; c < L.C; ++c)
      for (int64_t b = 0; b < nb; ++b)
        std::memcpy(buf + (c * L.group + b) * P, x + ((n0 + b) * L.C + c) * P,
                    sizeof(float) * static_cast<size_t>(P));
    return buf;
  }
  float* buf = pack_buffer(L);
  const int64_t s = L.s;
  // Where each phase's pixels come from and go, the same for every channel
  // (worked out once: the divisions cost as much as a small plane's copy).
  struct PhaseCopy {
    int64_t src, dst, count, rows;
  };
  PhaseCopy phases[4];
  int n_phases = 0;
  if (s <= 2)
    for (int64_t a = 0; a < s && a < L.KH; ++a) {  // a phase no tap reads (1x1 stride 2) is skipped
      // Input rows ih with padded row y = ih + pad in row phase a land in the
      // phase plane's rows y / s; likewise columns in column phase b.
      const int64_t ih0 = ((a - L.pad) % s + s) % s;
      if (ih0 >= L.H) continue;
      for (int64_t b = 0; b < s && b < L.KW; ++b) {
        const int64_t iw0 = ((b - L.pad) % s + s) % s;
        if (iw0 >= L.W) continue;
        phases[n_phases++] = {ih0 * L.W + iw0,
                              (a * s + b) * L.PS + (ih0 + L.pad) / s * L.Wq + (iw0 + L.pad) / s,
                              (L.W - iw0 + s - 1) / s, (L.H - ih0 + s - 1) / s};
      }
    }
  const sparse::RowCopy copy = sparse::row_copy();
  for (int64_t c = 0; c < L.C; ++c) {
    const float* plane = x + (n0 * L.C + c) * P;
    float* planes = buf + c * s * s * L.PS;
    if (s <= 2) {
      for (int i = 0; i < n_phases; ++i) {
        const PhaseCopy& ph = phases[i];
        copy(plane + ph.src, s * L.W, s, ph.count, ph.rows, planes + ph.dst, L.Wq);
      }
      continue;
    }
    for (int64_t a = 0; a < s && a < L.KH; ++a) {  // stride 3 and up: rare, plain loops
      const int64_t ih0 = ((a - L.pad) % s + s) % s;
      for (int64_t b = 0; b < s && b < L.KW; ++b) {
        const int64_t iw0 = ((b - L.pad) % s + s) % s;
        float* dst = planes + (a * s + b) * L.PS + (ih0 + L.pad) / s * L.Wq + (iw0 + L.pad) / s;
        for (int64_t ih = ih0, r = 0; ih < L.H; ih += s, ++r)
          for (int64_t iw = iw0, j = 0; iw < L.W; iw += s, ++j)
            dst[r * L.Wq + j] = plane[ih * L.W + iw];
      }
    }
  }
  return buf;
}

/// Checks a conv's shapes (throwing UsageError as sparse_conv2d_fused
/// documents, the message starting with `fn`) and works out its layout for
/// an input of shape xs.
ConvLayout conv_layout(const char* fn, const Shape& xs, const Tensor& weight,
                       const ConvEpilogue& epilogue, const Conv2dOptions& options) {
  auto fail = [&](const std::string& what) {
    throw UsageError(std::string(fn) + ": " + what + " (input " + shape_str(xs) + ", weight " +
                     shape_str(weight.shape()) + ")");
  };
  if (xs.size() != 4 || weight.dim() != 4) fail("input and weight must be 4-D");
  if (options.groups != 1) fail("groups must be 1");
  if (options.stride < 1 || options.padding < 0) fail("bad stride or padding");
  ConvLayout L{};
  L.N = xs[0], L.C = xs[1], L.H = xs[2], L.W = xs[3];
  L.OC = weight.size(0), L.KH = weight.size(2), L.KW = weight.size(3);
  L.s = options.stride, L.pad = options.padding;
  if (weight.size(1) != L.C) fail("input channels differ from the weight's");
  if (L.H + 2 * L.pad < L.KH || L.W + 2 * L.pad < L.KW) fail("kernel larger than padded input");
  L.OH = (L.H + 2 * L.pad - L.KH) / L.s + 1, L.OW = (L.W + 2 * L.pad - L.KW) / L.s + 1;
  const Tensor &scale = epilogue.scale, &shift = epilogue.shift, &residual = epilogue.residual;
  for (const Tensor* t : {&scale, &shift})
    if (t->defined() && (t->dim() != 1 || t->size(0) != L.OC))
      fail("scale and shift must be [C_out], got " + shape_str(t->shape()));
  if (residual.defined() && residual.shape() != Shape{L.N, L.OC, L.OH, L.OW})
    fail("residual must be [N, C_out, H_out, W_out], got " + shape_str(residual.shape()));
  L.in_place = L.KH == 1 && L.KW == 1 && L.s == 1 && L.pad == 0;
  const int64_t P = L.P();
  if (L.in_place) {
    L.group = (P >= 128 || L.N <= 1) ? 1 : std::min<int64_t>(L.N, (256 + P - 1) / P);
  } else {
    const int64_t Hp = L.H + 2 * L.pad, Wp = L.W + 2 * L.pad;
    L.Hq = (Hp + L.s - 1) / L.s, L.Wq = (Wp + L.s - 1) / L.s, L.PS = L.Hq * L.Wq;
  }
  return L;
}

/// Throws UsageError when any of the tensors would need a graph.
void check_no_graph(const char* fn, std::initializer_list<const Tensor*> tensors) {
  if (any_requires_grad(tensors))
    throw UsageError(std::string(fn) +
                     ": records no graph; call it under NoGradGuard or on tensors that need no "
                     "gradient");
}

/// Whether L runs one sample per grid on the grid kernel (every layout but
/// 1x1 convs with samples side by side).
bool runs_grid(const ConvLayout& L) { return !(L.in_place && L.group > 1); }

/// The input offsets of rows' nonzeros and the output grid's map for L, kept
/// in the cache's derived data until the layout or the rows change.
const SparseWeightCache::Derived& derive(const ConvLayout& L, const SparseRows& rows,
                                         SparseWeightCache& cache) {
  SparseWeightCache::Derived& d = cache.derived();
  const int64_t key[4] = {L.H, L.W, L.group, L.s * 1000 + L.pad};
  if (std::equal(key, key + 4, d.key)) return d;
  std::copy(key, key + 4, d.key);
  d.offset.resize(rows.col.size());
  for (size_t j = 0; j < rows.col.size(); ++j) d.offset[j] = L.offset(rows.col[j]);
  // Grid position q = row Wq + col is output row * OW + col when col < OW.
  const int64_t Q = L.Q(1), blocks = (Q + 15) / 16, width = L.in_place ? L.OW : L.Wq;
  d.keep.assign(static_cast<size_t>(runs_grid(L) && !L.in_place ? blocks : 0), 0);
  d.at.assign(d.keep.size(), 0);
  for (int64_t k = 0; k < static_cast<int64_t>(d.keep.size()); ++k) {
    const int64_t q0 = 16 * k;
    d.at[static_cast<size_t>(k)] =
        static_cast<int32_t>(q0 / width * L.OW + std::min(q0 % width, L.OW));
    for (int64_t q = q0; q < std::min(Q, q0 + 16); ++q)
      if (q % width < L.OW) d.keep[static_cast<size_t>(k)] |= static_cast<uint16_t>(1u << (q - q0));
  }
  return d;
}

/// Where one conv's outputs go: channel oc's plane at out + oc * plane
/// through `map`, each finished by its scale and shift, the residual at the
/// same place in res, and ReLU.
struct GridOutput {
  float* out;
  int64_t plane;
  sparse::GridMap map;
  const float *scale, *shift, *res;
  bool relu;
};

/// Output rows [oc0, oc1) of one sample of L from its packed input src, a
/// tile of grid positions at a time across the rows.
void run_grid(const ConvLayout& L, const float* src, const SparseRows& rows, const int32_t* off,
              const GridOutput& o, int64_t oc0, int64_t oc1) {
  const sparse::GridKernel kernel = sparse::grid_kernel();
  const int64_t Q = L.Q(1), tile = L.tile();
  const int32_t* start = rows.start.data();
  const float* val = rows.value.data();
  for (int64_t q0 = 0; q0 < Q; q0 += tile)
    for (int64_t oc = oc0; oc < oc1; ++oc) {
      const int64_t at = oc * o.plane;
      const sparse::RowEpilogue e{o.scale ? o.scale[oc] : 1.f, o.shift ? o.shift[oc] : 0.f,
                                  o.res ? o.res + at : nullptr, o.relu};
      kernel(src, off + start[oc], val + start[oc], start[oc + 1] - start[oc], q0,
             std::min(Q, q0 + tile), o.map, e, o.out + at);
    }
}

}  // namespace

Tensor sparse_conv2d_fused(const Tensor& x, const Tensor& weight, const Tensor& multiplier,
                           SparseWeightCache& cache, const ConvEpilogue& epilogue,
                           const Conv2dOptions& options) {
  const char* fn = "sparse_conv2d_fused";
  ConvLayout L = conv_layout(fn, x.shape(), weight, epilogue, options);
  const Tensor &scale = epilogue.scale, &shift = epilogue.shift, &residual = epilogue.residual;
  check_no_graph(fn, {&x, &weight, &multiplier, &scale, &shift, &residual});
  const SparseRows& rows = cache.get(weight, multiplier);
  const int64_t P = L.P();
  const SparseWeightCache::Derived& d = derive(L, rows, cache);
  const bool direct = runs_grid(L);
  count_macs(rows.nnz() * L.N * P);  // an upper bound at the borders of padded convs
  Tensor out = Tensor::empty({L.N, L.OC, L.OH, L.OW});
  if (out.numel() == 0) return out;
  const float* xd = x.data();
  float* od = out.data();
  const float *sc = data_or_null(scale), *sh = data_or_null(shift), *res = data_or_null(residual);
  const sparse::RowKernel row_kernel = sparse::row_kernel();
  const sparse::GridMap map = L.in_place ? sparse::GridMap{}  // 1x1: the grid is the plane
                                         : sparse::GridMap{d.keep.data(), d.at.data()};
  const int32_t* start = rows.start.data();
  const int32_t* off = d.offset.data();
  const float* val = rows.value.data();

  // Rows [oc0, oc1) of the samples [n0, n0 + nb) from their packed input.
  auto run_rows = [&](const float* src, int64_t n0, int64_t nb, int64_t oc0, int64_t oc1) {
    const int64_t Q = L.Q(nb);
    if (direct) {  // nb == 1: finished in the kernel, straight into sample n0's planes
      const int64_t at = n0 * L.OC * P;
      run_grid(L, src, rows, off,
               {od + at, P, map, sc, sh, res ? res + at : nullptr, epilogue.relu}, oc0, oc1);
      return;
    }
    float* g = grown(row_scratch(), Q);  // grid row b = sample n0 + b
    for (int64_t oc = oc0; oc < oc1; ++oc) {
      row_kernel(src, off + start[oc], val + start[oc], start[oc + 1] - start[oc], Q,
                 sc ? sc[oc] : 1.f, sh ? sh[oc] : 0.f, g);
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t at = ((n0 + b) * L.OC + oc) * P;
        finish_run(g + b * P, res ? res + at : nullptr, epilogue.relu, P, od + at);
      }
    }
  };

  const int64_t group = L.in_place ? L.group : 1;
  const int64_t groups = (L.N + group - 1) / group;
  auto group_size = [&](int64_t gi) { return std::min(group, L.N - gi * group); };
  if (groups >= num_threads() || in_parallel_region()) {
    parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; ++gi) {
        const int64_t nb = group_size(gi);
        run_rows(pack(L, xd, gi * group, nb), gi * group, nb, 0, L.OC);
      }
    });
  } else {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t nb = group_size(gi);
      const float* src = pack(L, xd, gi * group, nb);
      // Chunks of at least ~200k multiply-adds: below that a hand-off to the
      // pool costs more than it saves (batch 1, ResNet-20 B at 90 %: 0.347 ->
      // 0.326 ms on 2 threads). Rows are independent: results do not change.
      constexpr int64_t kMinChunkMacs = 200'000;
      const int64_t row_macs = std::max<int64_t>(1, rows.nnz() / L.OC * L.Q(nb));
      parallel_for(0, L.OC, std::max<int64_t>(1, kMinChunkMacs / row_macs),
                   [&](int64_t oc0, int64_t oc1) { run_rows(src, gi * group, nb, oc0, oc1); });
    }
  }
  return out;
}

Tensor sparse_conv2d_pair_fused(const Tensor& x, const Tensor& w1, const Tensor& m1,
                                SparseWeightCache& c1, const ConvEpilogue& e1, const Tensor& w2,
                                const Tensor& m2, SparseWeightCache& c2, const ConvEpilogue& e2) {
  const char* fn = "sparse_conv2d_pair_fused";
  const Conv2dOptions o{.stride = 1, .padding = 1};
  const ConvLayout L1 = conv_layout(fn, x.shape(), w1, e1, o);
  if (L1.KH != 3 || L1.KW != 3)
    throw UsageError(std::string(fn) + ": the weights must be 3x3, got " + shape_str(w1.shape()));
  if (e1.residual.defined())
    throw UsageError(std::string(fn) + ": the first conv takes no residual");
  const ConvLayout L2 = conv_layout(fn, {L1.N, L1.OC, L1.OH, L1.OW}, w2, e2, o);
  if (L2.KH != 3 || L2.KW != 3)
    throw UsageError(std::string(fn) + ": the weights must be 3x3, got " + shape_str(w2.shape()));
  check_no_graph(
      fn, {&x, &w1, &m1, &e1.scale, &e1.shift, &w2, &m2, &e2.scale, &e2.shift, &e2.residual});
  // Fewer samples than threads (batch 1): each conv splits its rows instead.
  if (L1.N < num_threads() && !in_parallel_region())
    return sparse_conv2d_fused(sparse_conv2d_fused(x, w1, m1, c1, e1, o), w2, m2, c2, e2, o);

  const SparseRows &r1 = c1.get(w1, m1), &r2 = c2.get(w2, m2);
  const SparseWeightCache::Derived &d1 = derive(L1, r1, c1), &d2 = derive(L2, r2, c2);
  const int64_t P = L2.P(), H = L2.H, W = L2.W, Wq = L2.Wq;
  count_macs((r1.nnz() + r2.nnz()) * L1.N * P);
  Tensor out = Tensor::empty({L2.N, L2.OC, L2.OH, L2.OW});
  if (out.numel() == 0) return out;
  const float* xd = x.data();
  float* od = out.data();
  const float* res = data_or_null(e2.residual);
  parallel_for(0, L1.N, 1, [&](int64_t n0, int64_t n1) {
    // The middle activation as the padded planes conv 2 reads (zero where
    // no pixel lands). Its grid position q is padded pixel q + Wq + 1, so
    // conv 1 stores straight into it through the identity map; the grid's
    // dropped columns (col >= W) land on the padding columns, zeroed again
    // after each sample.
    float* mid = middle_buffer(L2);
    for (int64_t n = n0; n < n1; ++n) {
      run_grid(L1, pack(L1, xd, n, 1), r1, d1.offset.data(),
               {mid + Wq + 1, L2.PS, sparse::GridMap{}, data_or_null(e1.scale),
                data_or_null(e1.shift), nullptr, e1.relu},
               0, L1.OC);
      for (int64_t c = 0; c < L2.C; ++c) {
        float* plane = mid + c * L2.PS;
        for (int64_t r = 1; r <= H; ++r) plane[r * Wq + W + 1] = 0.f, plane[(r + 1) * Wq] = 0.f;
      }
      const int64_t at = n * L2.OC * P;
      run_grid(L2, mid, r2, d2.offset.data(),
               {od + at, P, sparse::GridMap{d2.keep.data(), d2.at.data()}, data_or_null(e2.scale),
                data_or_null(e2.shift), res ? res + at : nullptr, e2.relu},
               0, L2.OC);
    }
  });
  return out;
}

double sparse_conv_max_density(int64_t kernel_size, int64_t stride, int64_t out_pixels,
                               int64_t batch) {
  if (batch == 1 && kernel_size > 1) return stride > 1 ? 0.5 : 0.6;
  if (stride > 1) return 0.4;
  if (kernel_size == 1 && out_pixels < 128) return 0.2;
  return 0.33;
}

Tensor sparse_linear(const Tensor& x, const Tensor& weight, const Tensor& multiplier,
                     SparseWeightCache& cache, const Tensor& bias) {
  auto fail = [&](const std::string& what) {
    throw UsageError("sparse_linear: " + what + " (input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) + ")");
  };
  if (x.dim() != 2 || weight.dim() != 2) fail("input and weight must be 2-D");
  const int64_t N = x.size(0), IN = x.size(1), OUT = weight.size(0);
  if (weight.size(1) != IN) fail("input features differ from the weight's");
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != OUT))
    fail("bias must be [out], got " + shape_str(bias.shape()));
  if (any_requires_grad({&x, &weight, &multiplier, &bias}))
    throw UsageError(
        "sparse_linear: records no graph; call it under NoGradGuard or on tensors that need no "
        "gradient");
  const SparseRows& rows = cache.get(weight, multiplier);
  SparseWeightCache::Derived& d = cache.derived();
  const int64_t key[4] = {N, IN, -2, -2};
  if (!std::equal(key, key + 4, d.key)) {
    std::copy(key, key + 4, d.key);
    d.offset.resize(rows.col.size());
    for (size_t j = 0; j < rows.col.size(); ++j)
      d.offset[j] = static_cast<int32_t>(rows.col[j] * N);
  }
  count_macs(rows.nnz() * N);
  Tensor out = Tensor::empty({N, OUT});
  if (out.numel() == 0) return out;
  // [in][N]: a row's nonzero j reads samples at offset col_j N.
  std::vector<float> xt(static_cast<size_t>(N * IN));
  const float* xd = x.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < IN; ++i) xt[static_cast<size_t>(i * N + n)] = xd[n * IN + i];
  const float* b = bias.defined() ? bias.data() : nullptr;
  float* od = out.data();
  const sparse::RowKernel kernel = sparse::row_kernel();
  parallel_for(0, OUT, 16, [&](int64_t o0, int64_t o1) {
    float* g = grown(row_scratch(), N);
    for (int64_t o = o0; o < o1; ++o) {
      const int32_t s0 = rows.start[static_cast<size_t>(o)],
                    s1 = rows.start[static_cast<size_t>(o + 1)];
      kernel(xt.data(), d.offset.data() + s0, rows.value.data() + s0, s1 - s0, N, 1.f,
             b ? b[o] : 0.f, g);
      for (int64_t n = 0; n < N; ++n) od[n * OUT + o] = g[n];
    }
  });
  return out;
}

}  // namespace spruce::ops
