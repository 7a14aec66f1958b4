// The process-wide warning handler.
#include "warning.h"

#include <cstdio>
#include <mutex>

namespace spruce {
namespace {

std::mutex g_mutex;
WarningHandler g_handler;

}  // namespace

void warn(const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_handler)
    g_handler(message);
  else
    std::fprintf(stderr, "spruce: warning: %s\n", message.c_str());
}

WarningHandler set_warning_handler(WarningHandler handler) {
  std::lock_guard<std::mutex> lock(g_mutex);
  WarningHandler previous = std::move(g_handler);
  g_handler = std::move(handler);
  return previous;
}

}  // namespace spruce
