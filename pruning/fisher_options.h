// The Fisher settings every Fisher-based pruner and every tool share, in one
// struct: how many gradients are sampled (m, of mini-batches of b samples),
// and how the empirical Fisher F = λI + (1/m) Σ g gᵀ is damped and blocked.
// Tools map their --fisher-samples, --fisher-batch, --damp and --block-size
// flags onto it one to one; pruners read what they need (λ, c).
#pragma once

#include <cstdint>

namespace spruce::pruning {

struct FisherOptions {
  double damp = 1e-5;        // λ (the reference's scripts use 1e-5)
  int64_t block_size = 100;  // c; >= a layer's size gives one block per layer
  /// WoodFisher: each block damped with λ + relative_damp × the mean of its
  /// Fisher diagonal (GGᵀ/m)_qq, so damping follows the Fisher's scale (0 = off).
  double relative_damp = 0.0;
  /// WoodTaylor: the mean gradient ḡ enters the model scaled by this (1 = the
  /// derivation; smaller trusts the first-order term less). With the
  /// empirical Fisher of a trained model the full Newton step F⁻¹ḡ is far
  /// outside the quadratic model's range (pruning/README.md, "WoodTaylor").
  double taylor_scale = 1.0;
  int64_t samples = 400;  // m: gradients per Fisher
  int64_t batch = 1;      // b: samples averaged into each gradient (the batch source's batch size)
};

}  // namespace spruce::pruning
