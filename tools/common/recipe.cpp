// YAML recipe -> flag settings.
#include "tools/common/recipe.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "core/error.h"

namespace spruce::cli {

std::vector<std::pair<std::string, std::string>> read_recipe(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw IoError(path + ": no such recipe file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw FormatError(path + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (root.IsNull()) return {};
  if (!root.IsMap())
    throw FormatError(path + ": expected a mapping of settings (flag: value), found a " +
                      (root.IsSequence() ? std::string("list") : std::string("scalar")));
  std::vector<std::pair<std::string, std::string>> settings;
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    const YAML::Node& v = item.second;
    const std::string where =
        path + ": line " + std::to_string(item.first.Mark().line + 1) + ": '" + key + "'";
    if (v.IsScalar()) {
      settings.emplace_back(key, v.as<std::string>());
    } else if (v.IsSequence()) {
      std::string joined;
      for (const auto& e : v) {
        if (!e.IsScalar()) throw FormatError(where + ": expected a list of values");
        if (!joined.empty()) joined += ',';
        joined += e.as<std::string>();
      }
      settings.emplace_back(key, joined);
    } else if (v.IsNull()) {
      throw FormatError(where + ": has no value");
    } else {
      throw FormatError(where + ": expected a value or a list, found a mapping");
    }
  }
  return settings;
}

}  // namespace spruce::cli
