// The tools' command lines: each tool declares its flags with a default and a
// help line; parse() reads argv with CLI11 (Debian libcli11-dev: --name VALUE
// and --name=VALUE, --no-name for switches, --help with every default,
// --version), then validates each value and turns every mistake into one
// spruce::UsageError naming the flag and what was expected (the tools exit
// with status 2 on those). The flag table stays ours, not CLI11's, because
// recipes (YAML) and --resume set flags by name from text too, with the same
// checks, and checkpoints save every flag's value as text.
//
// Flag names mean the same thing in every tool: --model is an architecture
// name, --checkpoint a file to read, --eval-limit a count of test samples,
// --batch-size a batch size, --json a file to write results to.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace spruce::cli {

/// v as an integer, or UsageError "--flag: expected an integer, got 'v'"
/// (the whole text must be the number).
int64_t to_int(const std::string& flag, const std::string& v);

class Args {
 public:
  Args(std::string program, std::string summary);

  /// Declares flags. `name` without dashes ("epochs"); it is given as --epochs VALUE or
  /// --epochs=VALUE.
  void add_string(const std::string& name, std::string* target, const std::string& help);
  /// A string that must be one of `choices`.
  void add_choice(const std::string& name, std::string* target, std::vector<std::string> choices,
                  const std::string& help);
  void add_int(const std::string& name, int64_t* target, const std::string& help,
               int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  void add_double(const std::string& name, double* target, const std::string& help,
                  double min = -1e300, double max = 1e300, bool min_exclusive = false,
                  bool max_exclusive = false);
  /// Comma-separated doubles, each within [min, max) when max_exclusive.
  void add_double_list(const std::string& name, std::vector<double>* target,
                       const std::string& help, double min, double max, bool max_exclusive);
  /// Comma-separated strings, each one of `choices` when choices is not empty.
  void add_string_list(const std::string& name, std::vector<std::string>* target,
                       const std::string& help, std::vector<std::string> choices = {});
  /// A switch: --name sets true, --no-name sets false.
  void add_flag(const std::string& name, bool* target, const std::string& help);

  /// A deprecated spelling: --old_name works as --new_name (declared before)
  /// with a warning "--old_name is deprecated, use --new_name"; not in --help.
  void add_deprecated(const std::string& old_name, const std::string& new_name);

  /// Parses argv. Returns false when --help or --version was printed (the caller exits 0).
  /// Throws UsageError for unknown flags, missing or malformed values.
  bool parse(int argc, char** argv);
  /// True when the user gave this flag explicitly (recipes: flags override files).
  bool given(const std::string& name) const;
  /// The current value of flag `name` as text (as values() writes it);
  /// UsageError for an unknown name.
  std::string value(const std::string& name) const;
  /// Applies "name=value" settings as if they had been given on the command line,
  /// but only for flags the user did not give (used for recipe files).
  void apply_defaults(const std::vector<std::pair<std::string, std::string>>& settings,
                      const std::string& source);
  std::string help() const;
  /// Every flag's current value as text, in declaration order (saved in
  /// checkpoints so that --resume continues with the same settings).
  std::vector<std::pair<std::string, std::string>> values() const;

 private:
  struct Flag {
    std::string name, help, default_text, kind;
    std::function<void(const std::string&)> set;
    std::function<std::string()> get;
    bool is_switch = false;
  };
  void add(Flag flag);
  void set_value(Flag& flag, const std::string& value, const std::string& source);
  std::string program_, summary_;
  std::vector<Flag> flags_;
  std::vector<std::pair<std::string, std::string>> deprecated_;  // (old, new)
  std::map<std::string, size_t> index_;
  std::map<std::string, bool> given_;
};

/// Runs a tool's main body: prints spruce errors as one line
/// "<program>: error: ..." and returns 2 for usage errors, 1 for the rest;
/// library warnings (core/warning.h) print as "<program>: warning: ...".
int run_tool(const char* program, const std::function<int()>& body);

}  // namespace spruce::cli
