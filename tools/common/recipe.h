// Recipe files: a whole training run (model, data, optimizer, LR schedule,
// gradual pruning with its pruner and Fisher settings, prunable patterns)
// written as YAML, as SparseML and the WoodFisher reference do.
//
// A recipe is one YAML mapping whose keys are the tool's flag names and whose
// values are scalars or lists (a list is the comma-separated flag value):
//   model: resnet20
//   epochs: 30
//   prune-method: woodfisher
//   patterns: ["layer*.*.conv*.weight"]
// Flags given on the command line override the recipe. Parsed with yaml-cpp
// (Debian's libyaml-cpp-dev) rather than a hand-written YAML subset.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace spruce::cli {

/// Reads `path` into (flag, value) settings, in file order. Errors
/// (unreadable file, bad YAML, a nested mapping) name the file and line.
std::vector<std::pair<std::string, std::string>> read_recipe(const std::string& path);

}  // namespace spruce::cli
