// Method names -> pruners: the pruner table and the method-name grammar.
#include "pruner_registry.h"

#include <cstdlib>
#include <sstream>

#include "../core/error.h"
#include "diag_fisher_pruner.h"
#include "magnitude_pruner.h"

namespace spruce::pruning {
namespace {

std::unique_ptr<Pruner> make_magnitude(const PruningMethod&, Communicator*) {
  return std::make_unique<MagnitudePruner>();
}

std::unique_ptr<Pruner> make_diag_fisher(const PruningMethod&, Communicator* comm) {
  return std::make_unique<DiagFisherPruner>(comm);
}

WoodFisherOptions woodfisher_options(const PruningMethod& method) {
  WoodFisherOptions o;
  o.update = method.update;
  o.update_scale = method.update_scale;
  return o;
}

std::unique_ptr<Pruner> make_woodfisher(const PruningMethod& method, Communicator* comm) {
  return std::make_unique<WoodFisherPruner>(woodfisher_options(method), comm);
}

std::unique_ptr<Pruner> make_woodtaylor(const PruningMethod& method, Communicator* comm) {
  WoodFisherOptions o = woodfisher_options(method);
  o.first_order = true;
  return std::make_unique<WoodFisherPruner>(o, comm);
}

const PrunerKind* find_kind(const std::string& name) {
  for (const auto& k : pruner_table())
    if (k.name == name) return &k;
  return nullptr;
}

}  // namespace

const std::vector<PrunerKind>& pruner_table() {
  static const std::vector<PrunerKind> table{
      {"magnitude", false, make_magnitude},
      {"diagfisher", false, make_diag_fisher},
      {"woodfisher", true, make_woodfisher},
      {"woodtaylor", true, make_woodtaylor},
  };
  return table;
}

std::vector<std::string> pruner_names() {
  std::vector<std::string> names;
  for (const auto& k : pruner_table()) names.push_back(k.name);
  return names;
}

std::string PruningMethod::name() const {
  std::string out = pruner;
  if (selection == Selection::kPerLayer) out += "-layer";
  if (target == Target::kFlops) out += "-flops";
  const PrunerKind* kind = find_kind(pruner);
  if (!kind || !kind->obs_update) return out;
  const bool no_update = update == ObsUpdate::kSummed && update_scale == 0.0;
  if (update == ObsUpdate::kSummed) out += no_update ? "-noupdate" : "-summed";
  if (update_scale != 1.0 && !no_update) {
    std::ostringstream scale;
    scale << update_scale;
    out += "-scale" + scale.str();
  }
  return out;
}

PruningMethod parse_method(const std::string& text, double update_scale) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream is(text);
  while (std::getline(is, part, '-')) parts.push_back(part);
  PruningMethod m;
  const auto bad = [&](const std::string& why) {
    std::string names, with_update;
    for (const auto& k : pruner_table()) {
      names += (names.empty() ? "" : "|") + k.name;
      if (k.obs_update) with_update += (with_update.empty() ? "" : "|") + k.name;
    }
    return UsageError("pruning method '" + text + "': " + why + " (expected " + names +
                      ", optionally followed by -layer or -global, -flops, and for " + with_update +
                      " -exact, -summed, -noupdate or -scaleS with S in [0, 1])");
  };
  if (parts.empty()) throw bad("empty");
  m.pruner = parts[0];
  const PrunerKind* kind = find_kind(m.pruner);
  if (!kind) throw bad("unknown pruner '" + m.pruner + "'");
  if (!(update_scale >= 0.0 && update_scale <= 1.0))
    throw UsageError("update scale " + std::to_string(update_scale) +
                     ": expected a value in [0, 1]");
  m.update_scale = update_scale;
  bool scale_given = false;  // by -scaleS or -noupdate: the name wins over the default
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "layer")
      m.selection = Selection::kPerLayer;
    else if (p == "global")
      m.selection = Selection::kGlobal;
    else if (p == "flops")
      m.target = Target::kFlops;
    else if (kind->obs_update && p == "exact")
      m.update = ObsUpdate::kExact;
    else if (kind->obs_update && p == "summed")
      m.update = ObsUpdate::kSummed;
    else if (kind->obs_update && p == "noupdate" && !scale_given)
      m.update = ObsUpdate::kSummed, m.update_scale = 0.0, scale_given = true;
    else if (kind->obs_update && p.rfind("scale", 0) == 0 && !scale_given) {
      char* end = nullptr;
      const double s = std::strtod(p.c_str() + 5, &end);
      if (p.size() == 5 || *end != '\0' || !(s >= 0.0 && s <= 1.0))
        throw bad("'" + p + "' needs a scale in [0, 1], e.g. scale0.5");
      m.update_scale = s, scale_given = true;
    } else
      throw bad("unknown modifier '" + p + "'");
  }
  return m;
}

std::unique_ptr<Pruner> make_pruner(const PruningMethod& method, Communicator* comm) {
  const PrunerKind* kind = find_kind(method.pruner);
  if (!kind) throw UsageError("unknown pruner '" + method.pruner + "'");
  return kind->make(method, comm);
}

}  // namespace spruce::pruning
