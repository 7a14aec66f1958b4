// Optimal Brain Surgeon weight updates on a block-diagonal inverse Fisher
// (pruning/README.md, "Weight update (OBS)"), and the quadratic model's loss change.
//
// With Q_b the weights pruned now inside block b and A = F_b⁻¹:
//   exact    δ_b = −A_{:,Q} (A_QQ)⁻¹ w_Q,   predicted ΔL = ½ w_Qᵀ (A_QQ)⁻¹ w_Q,
//            the minimiser of ½ δᵀF_bδ subject to (w + δ)_Q = 0;
//   summed   δ_b = scale · A v,  v_q = −w_q / A_qq (q ∈ Q_b, else 0),
//            predicted ΔL = Σ_q ρ_q = Σ_q w_q² / (2 A_qq), as the reference
//            implementation adds up single-weight updates; scale 0 is OBD.
// Both then set w_Q to exactly zero. Blocks are independent and run in
// parallel; (A_QQ)⁻¹ w_Q is solved in double by BlockInverse::solve.
#pragma once

#include <cstdint>
#include <span>

#include "../core/error.h"
#include "blocks.h"
#include "fisher_gradients.h"
#include "woodbury.h"

namespace spruce::pruning {

/// Exact multi-weight OBS update of w [d] in place for the flat indices
/// `prune` (ascending, distinct); adds each block's ½ w_Qᵀ(A_QQ)⁻¹w_Q to
/// loss[block.layer]. Throws UsageError on bad indices.
void obs_update_exact(std::span<float> w, const BlockInverse& inv, std::span<const int64_t> prune,
                      std::span<double> loss);

/// Summed single-weight updates (the reference's), scaled by `scale`; adds
/// Σ_q w_q²/(2 A_qq) to loss[block.layer].
void obs_update_summed(std::span<float> w, const BlockInverse& inv, std::span<const int64_t> prune,
                       double scale, std::span<double> loss);

/// ½ δ_bᵀ F_b δ_b of the change δ = after − before, per block, added to
/// loss[block.layer], with F_b = λI + (1/m) Σ g_{i,b} g_{i,b}ᵀ and gradient
/// entries where mask = 0 taken as zero (empty mask: none). before, after: [d]
void fisher_quadratic(std::span<const float> before, std::span<const float> after,
                      const GradientBank& grads, std::span<const Block> blocks, double damp,
                      std::span<const float> mask, std::span<double> loss);

}  // namespace spruce::pruning
