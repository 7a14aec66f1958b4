// The kernel sections of spruce-bench, each printing its table to stdout
// and returning its rows as a JSON array:
//
//   sgemm       GFLOP/s at 1024^2 and 2048^2 of cblas_sgemm with OpenBLAS lent
//               all threads (the roofline, as torch.mm) and of ops::sgemm (the
//               models' path);
//   fisher      collecting m Fisher gradients of ResNet-20's conv + linear
//               weights, per sample and per mini-batch;
//   woodfisher  the block-diagonal inverse Fisher of those weights from m
//               random gradients, and the plain rank-1 Woodbury loop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/common/json.h"

namespace spruce::bench {

/// The roofline table; `threads` is the pool size, for the heading.
cli::Json run_sgemm_section(int64_t threads, int64_t runs, int64_t warmup);

/// Fisher gradient collection of m gradients, at batch 1 and at batch_size.
cli::Json run_fisher_section(int64_t m, int64_t batch_size, int64_t runs);

/// Block inverses for each "CxM" setting (block size x gradients); the rank-1
/// loop timed for up to rank1_budget seconds and extrapolated beyond (0 = skipped).
cli::Json run_woodfisher_section(const std::vector<std::string>& settings, int64_t runs,
                                 double rank1_budget);

}  // namespace spruce::bench
