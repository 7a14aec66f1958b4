// Error classes shared by every folder. Each message is one line that names
// the file (or flag), what was wrong and what was expected; tools print it
// and exit non-zero (2 for UsageError, 1 otherwise).
#pragma once

#include <stdexcept>
#include <string>

namespace spruce {

/// Base of all spruce errors.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A file could not be opened, read, written or renamed.
struct IoError : Error {
  using Error::Error;
};
/// A file's content is not what its format promises (magic, sizes, CRC, ...).
struct FormatError : Error {
  using Error::Error;
};
/// A command-line value or setting is invalid.
struct UsageError : Error {
  using Error::Error;
};

}  // namespace spruce
