// Method names -> pruners.
#include "pruner_registry.h"

#include <sstream>

#include "../core/error.h"
#include "diag_fisher_pruner.h"
#include "magnitude_pruner.h"

namespace spruce::pruning {

const std::vector<std::string>& pruner_names() {
  static const std::vector<std::string> names{"magnitude", "diagfisher", "woodfisher"};
  return names;
}

std::string PruningMethod::name() const {
  std::string out = pruner;
  if (selection == Selection::PerLayer) out += "-layer";
  if (pruner == "woodfisher") {
    if (update == ObsUpdate::Summed) out += summed_scale == 0.0 ? "-noupdate" : "-summed";
  }
  return out;
}

PruningMethod parse_method(const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream is(text);
  while (std::getline(is, part, '-')) parts.push_back(part);
  PruningMethod m;
  const auto bad = [&](const std::string& why) {
    return UsageError("pruning method '" + text + "': " + why +
                      " (expected magnitude|diagfisher|woodfisher, optionally followed by -layer or -global, "
                      "and for woodfisher -exact, -summed or -noupdate)");
  };
  if (parts.empty()) throw bad("empty");
  m.pruner = parts[0];
  bool known = false;
  for (const auto& n : pruner_names()) known = known || n == m.pruner;
  if (!known) throw bad("unknown pruner '" + m.pruner + "'");
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "layer") m.selection = Selection::PerLayer;
    else if (p == "global") m.selection = Selection::Global;
    else if (m.pruner == "woodfisher" && p == "exact") m.update = ObsUpdate::Exact;
    else if (m.pruner == "woodfisher" && p == "summed") m.update = ObsUpdate::Summed, m.summed_scale = 1.0;
    else if (m.pruner == "woodfisher" && p == "noupdate") m.update = ObsUpdate::Summed, m.summed_scale = 0.0;
    else throw bad("unknown modifier '" + p + "'");
  }
  return m;
}

std::unique_ptr<Pruner> make_pruner(const PruningMethod& method, Communicator* comm) {
  if (method.pruner == "magnitude") return std::make_unique<MagnitudePruner>();
  if (method.pruner == "diagfisher") return std::make_unique<DiagFisherPruner>(comm);
  if (method.pruner == "woodfisher") {
    WoodFisherOptions o;
    o.update = method.update;
    o.summed_scale = method.summed_scale;
    return std::make_unique<WoodFisherPruner>(o, comm);
  }
  throw UsageError("unknown pruner '" + method.pruner + "'");
}

}  // namespace spruce::pruning
