// JSON text building.
#include "tools/common/json.h"

#include <cmath>
#include <cstdio>

namespace spruce::cli {

std::string json_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void Json::separator() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

Json& Json::begin_object() {
  separator();
  out_ += '{';
  first_.push_back(true);
  return *this;
}

Json& Json::end_object() {
  out_ += '}';
  first_.pop_back();
  return *this;
}

Json& Json::begin_array() {
  separator();
  out_ += '[';
  first_.push_back(true);
  return *this;
}

Json& Json::end_array() {
  out_ += ']';
  first_.pop_back();
  return *this;
}

Json& Json::key(const std::string& k) {
  separator();
  out_ += '"' + json_escape(k) + "\":";
  after_key_ = true;
  return *this;
}

Json& Json::value(const std::string& s) {
  separator();
  out_ += '"' + json_escape(s) + '"';
  return *this;
}

Json& Json::value(double d) {
  separator();
  if (!std::isfinite(d)) {
    out_ += "null";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.10g", d);
    out_ += buf;
  }
  return *this;
}

Json& Json::value(int64_t i) {
  separator();
  out_ += std::to_string(i);
  return *this;
}

Json& Json::value(bool b) {
  separator();
  out_ += b ? "true" : "false";
  return *this;
}

}  // namespace spruce::cli
