// Error classes shared by every folder: one type per kind of mistake, so a
// caller can tell who has to act, and every error spruce throws derives from
// spruce::Error (besides std::bad_alloc when memory runs out).
//
//   UsageError      the caller asked for something invalid: an argument, shape,
//                   index, option, name or flag out of its domain, or a call the
//                   object's state does not allow (backward() on a tensor that
//                   needs no gradient, scores() before prepare()). Fix the call.
//   IoError         a file could not be opened, read, written or renamed.
//   FormatError     a file's content is not what its format promises (magic,
//                   sizes, CRC, keys, shapes, metadata). Fix or replace the file.
//   NumericalError  valid inputs whose numbers defeat the computation: NaN or
//                   Inf gradients, a matrix that is not positive definite in
//                   float. Change the data or the settings (e.g. more damping).
//
// Each message is one line that names the function, file or flag, what was
// wrong and what was expected; tools print it and exit non-zero (2 for
// UsageError, 1 otherwise).
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
/// An argument, option, flag or call that the callee does not accept.
struct UsageError : Error {
  using Error::Error;
};
/// Numbers (NaN, Inf, a non-positive-definite matrix) that defeat a computation.
struct NumericalError : Error {
  using Error::Error;
};

}  // namespace spruce
