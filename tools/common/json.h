// A minimal JSON writer for logs and result files (objects, arrays, numbers,
// strings with escapes). Non-finite numbers are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spruce::cli {

class Json {
 public:
  Json& begin_object();
  Json& end_object();
  Json& begin_array();
  Json& end_array();
  /// Inside an object: the next value's key.
  Json& key(const std::string& k);
  Json& value(const std::string& s);
  Json& value(const char* s) { return value(std::string(s)); }
  Json& value(double d);
  Json& value(int64_t i);
  Json& value(int i) { return value(static_cast<int64_t>(i)); }
  Json& value(bool b);
  /// key + value in one call.
  template <class T>
  Json& field(const std::string& k, const T& v) {
    key(k);
    return value(v);
  }
  const std::string& str() const { return out_; }

 private:
  void separator();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

/// Escapes a string for a JSON string literal (without the quotes).
std::string json_escape(const std::string& s);

}  // namespace spruce::cli
