// Pruning methods by name, for tools and recipes. A method is a pruner plus
// its selection mode and (for pruners with an OBS update) its weight update,
// written as a base name with optional '-' modifiers:
//   magnitude | diagfisher | woodfisher | woodtaylor   (selection: global, update: exact)
//   -layer / -global                            selection (independent per layer / joint)
//   -exact / -summed / -noupdate                the OBS update (noupdate = summed, scale 0)
//   -scaleS                                     the OBS update scaled by S in [0, 1]
//   -flops                                      FLOP-aware: ρ/c ranking, sparsity
//                                               counts multiply-adds (selection.h)
// e.g. "woodfisher-layer-summed", "woodfisher-summed-scale0.5", "magnitude-layer",
// "woodfisher-flops".
//
// The pruners are one table (pruner_registry.cpp): adding a pruner is its
// own file pair (a Pruner subclass) plus one row there.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pruner.h"
#include "selection.h"
#include "woodfisher_pruner.h"

namespace spruce::pruning {

struct PruningMethod {
  std::string pruner = "woodfisher";  // a name of the table
  Selection selection = Selection::kGlobal;
  ObsUpdate update = ObsUpdate::kExact;
  double update_scale = 1.0;         // δ scaled by this, in [0, 1]; summed with 0 = no update
  Target target = Target::kWeights;  // kFlops: the set needs FLOP costs (flop_cost.h)
  /// The canonical name ("woodfisher-layer-summed"); parse_method(name()) gives this back.
  std::string name() const;
};

/// One row of the pruner table.
struct PrunerKind {
  std::string name;
  /// Whether the pruner updates the surviving weights with an OBS update
  /// (accepts -exact, -summed and -noupdate).
  bool obs_update = false;
  /// A fresh pruner; comm as for make_pruner.
  std::unique_ptr<Pruner> (*make)(const PruningMethod& method, Communicator* comm) = nullptr;
};

/// Every pruner, in the order tools list them.
const std::vector<PrunerKind>& pruner_table();
/// The base pruner names, in table order.
std::vector<std::string> pruner_names();
/// Parses a method name; UsageError naming the bad part and the valid ones.
/// `update_scale` is the scale of an OBS update whose name gives none
/// (-scaleS or -noupdate), e.g. from a tool's --update-scale flag.
PruningMethod parse_method(const std::string& text, double update_scale = 1.0);
/// A fresh pruner for the method. With a communicator of several ranks, a
/// Fisher-based pruner expects each rank's share of the gradient rows and
/// every rank ends with the same masks and weights (distributed_fisher.h).
std::unique_ptr<Pruner> make_pruner(const PruningMethod& method, Communicator* comm = nullptr);

}  // namespace spruce::pruning
