// JSON text and files for the tools.
#include "tools/common/json.h"

#include "tools/common/report.h"

namespace spruce::cli {

std::string json_text(const Json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

void write_json_file(const std::string& path, const Json& j) {
  write_text_file(path, json_text(j, 2) + "\n");
}

}  // namespace spruce::cli
