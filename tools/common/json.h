// JSON for the tools' result and log files (bench --json, eval/prune --json,
// compare's results.json, train's log.jsonl), built with nlohmann-json
// (Debian nlohmann-json3-dev). Keys keep the order they were added in, so a
// file reads in the order its fields are explained; non-finite numbers are
// written as null.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace spruce::cli {

using Json = nlohmann::ordered_json;

/// The text of `j`: one line (a JSON-lines record) when indent < 0, else
/// indented by that many spaces; strings that are not valid UTF-8 (a path,
/// say) get U+FFFD for their bad bytes instead of failing the write.
std::string json_text(const Json& j, int indent = -1);

/// Writes `j` (indented by 2) and a newline to `path` atomically; IoError on failure.
void write_json_file(const std::string& path, const Json& j);

}  // namespace spruce::cli
