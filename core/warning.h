// Warnings from library code: something was handled, but the user should
// know (e.g. a Fisher block whose damping had to be raised to be invertible).
// The library never prints by itself; it calls warn(), whose default handler
// writes "spruce: warning: <message>" to stderr. A tool or a library user
// installs its own handler (the tools prefix their name; tests collect the
// messages). warn() may be called from any thread; the handler is called
// under a lock, one message at a time.
#pragma once

#include <functional>
#include <string>

namespace spruce {

using WarningHandler = std::function<void(const std::string& message)>;

/// Reports `message` (one line, no trailing newline) to the current handler.
void warn(const std::string& message);

/// Installs `handler` (an empty one restores the default) and returns the
/// previous one.
WarningHandler set_warning_handler(WarningHandler handler);

}  // namespace spruce
