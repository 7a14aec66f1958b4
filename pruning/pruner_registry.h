// Pruning methods by name, for tools and recipes. A method is a pruner plus
// its selection mode and (for WoodFisher) its weight update, written as a
// base name with optional '-' modifiers:
//   magnitude | diagfisher | woodfisher        (selection: global, update: exact)
//   -layer / -global                            selection (independent per layer / joint)
//   -exact / -summed / -noupdate                WoodFisher's OBS update (noupdate = summed, scale 0)
// e.g. "woodfisher-layer-summed", "magnitude-layer".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pruner.h"
#include "selection.h"
#include "woodfisher_pruner.h"

namespace spruce::pruning {

struct PruningMethod {
  std::string pruner = "woodfisher";  // magnitude | diagfisher | woodfisher
  Selection selection = Selection::Global;
  ObsUpdate update = ObsUpdate::Exact;
  double summed_scale = 1.0;  // for ObsUpdate::Summed; 0 = no update
  /// The canonical name ("woodfisher-layer-summed"); parse_method(name()) gives this back.
  std::string name() const;
};

/// The base pruner names.
const std::vector<std::string>& pruner_names();
/// Parses a method name; UsageError naming the bad part and the valid ones.
PruningMethod parse_method(const std::string& text);
/// A fresh pruner for the method. With a communicator of several ranks, a
/// Fisher-based pruner expects each rank's share of the gradient rows and
/// every rank ends with the same masks and weights (distributed_fisher.h).
std::unique_ptr<Pruner> make_pruner(const PruningMethod& method, Communicator* comm = nullptr);

}  // namespace spruce::pruning
