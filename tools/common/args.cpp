// Flag parsing (CLI11) and validation for the tools.
#include "tools/common/args.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>

#include "core/communicator.h"
#include "core/error.h"
#include "core/stop_request.h"
#include "core/version.h"
#include "core/warning.h"

namespace spruce::cli {
namespace {
std::string join(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep))
    if (!cur.empty()) parts.push_back(cur);
  return parts;
}

double to_double(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double d = 0;
  try {
    d = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !std::isfinite(d))
    throw UsageError("--" + flag + ": expected a number, got '" + v + "'");
  return d;
}

/// Shortest text that reads back to the same double.
std::string fmt_double(double d) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, res.ptr);
}
}  // namespace

int64_t to_int(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty())
    throw UsageError("--" + flag + ": expected an integer, got '" + v + "'");
  return x;
}

Args::Args(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void Args::add(Flag flag) {
  index_[flag.name] = flags_.size();
  flags_.push_back(std::move(flag));
}

void Args::add_string(const std::string& name, std::string* target, const std::string& help) {
  add({name, help, *target, "TEXT", [target](const std::string& v) { *target = v; },
       [target] { return *target; }});
}

void Args::add_choice(const std::string& name, std::string* target,
                      std::vector<std::string> choices, const std::string& help) {
  const std::string list = join(choices, "|");
  add({name, help, *target, list,
       [name, target, choices](const std::string& v) {
         for (const auto& c : choices)
           if (c == v) {
             *target = v;
             return;
           }
         throw UsageError("--" + name + ": unknown value '" + v +
                          "', expected one of: " + join(choices));
       },
       [target] { return *target; }});
}

void Args::add_int(const std::string& name, int64_t* target, const std::string& help, int64_t min,
                   int64_t max) {
  add({name, help, std::to_string(*target), "INT",
       [=](const std::string& v) {
         const int64_t x = to_int(name, v);
         if (x < min || x > max)
           throw UsageError("--" + name + ": " + v + " is out of range, expected " +
                            (max == INT64_MAX ? ">= " + std::to_string(min)
                                              : std::to_string(min) + ".." + std::to_string(max)));
         *target = x;
       },
       [target] { return std::to_string(*target); }});
}

void Args::add_double(const std::string& name, double* target, const std::string& help, double min,
                      double max, bool min_exclusive, bool max_exclusive) {
  add({name, help, fmt_double(*target), "NUM",
       [=](const std::string& v) {
         const double d = to_double(name, v);
         const bool low = min_exclusive ? d <= min : d < min;
         const bool high = max_exclusive ? d >= max : d > max;
         if (low || high) {
           std::string range = std::string(min_exclusive ? "(" : "[") + fmt_double(min) + ", " +
                               (max >= 1e300 ? "inf" : fmt_double(max)) +
                               (max_exclusive ? ")" : "]");
           throw UsageError("--" + name + ": " + v + " is out of range, expected a value in " +
                            range);
         }
         *target = d;
       },
       [target] { return fmt_double(*target); }});
}

void Args::add_double_list(const std::string& name, std::vector<double>* target,
                           const std::string& help, double min, double max, bool max_exclusive) {
  std::vector<std::string> text;
  for (double d : *target) text.push_back(fmt_double(d));
  add({name, help, join(text, ","), "NUM,NUM,...",
       [=](const std::string& v) {
         std::vector<double> values;
         for (const auto& part : split(v, ',')) {
           const double d = to_double(name, part);
           if (d < min || (max_exclusive ? d >= max : d > max))
             throw UsageError("--" + name + ": " + part +
                              " is out of range, expected a value in [" + fmt_double(min) + ", " +
                              fmt_double(max) + (max_exclusive ? ")" : "]"));
           values.push_back(d);
         }
         if (values.empty()) throw UsageError("--" + name + ": expected at least one number");
         *target = values;
       },
       [target] {
         std::vector<std::string> text;
         for (double d : *target) text.push_back(fmt_double(d));
         return join(text, ",");
       }});
}

void Args::add_string_list(const std::string& name, std::vector<std::string>* target,
                           const std::string& help, std::vector<std::string> choices) {
  add({name, help, join(*target, ","), choices.empty() ? "A,B,..." : join(choices, "|") + ",...",
       [=](const std::string& v) {
         // An empty value is an empty list (how a saved, unset list flag reads back).
         auto values = split(v, ',');
         for (const auto& item : values) {
           bool ok = choices.empty();
           for (const auto& c : choices) ok = ok || c == item;
           if (!ok)
             throw UsageError("--" + name + ": unknown value '" + item +
                              "', expected one of: " + join(choices));
         }
         *target = values;
       },
       [target] { return join(*target, ","); }});
}

void Args::add_flag(const std::string& name, bool* target, const std::string& help) {
  Flag f{name,
         help,
         *target ? "on" : "off",
         "",
         [=](const std::string& v) {
           if (v == "true" || v == "1" || v == "on" || v == "yes")
             *target = true;
           else if (v == "false" || v == "0" || v == "off" || v == "no")
             *target = false;
           else
             throw UsageError("--" + name + ": expected true or false, got '" + v + "'");
         },
         [target] { return std::string(*target ? "true" : "false"); }};
  f.is_switch = true;
  add(std::move(f));
}

void Args::set_value(Flag& flag, const std::string& value, const std::string& source) {
  try {
    flag.set(value);
  } catch (const UsageError& e) {
    if (source.empty()) throw;
    throw UsageError(source + ": " + e.what());
  }
}

void Args::add_deprecated(const std::string& old_name, const std::string& new_name) {
  deprecated_.emplace_back(old_name, new_name);
}

bool Args::parse(int argc, char** argv) {
  const std::string name = program_.substr(0, program_.find(' '));
  CLI::App app(summary_, name);
  app.set_version_flag("--version", std::string(SPRUCE_VERSION), "print the spruce version");
  app.set_help_flag("-h,--help", "show this help");
  // Every flag is read as text and checked by our own setters (below), so a
  // recipe or a saved checkpoint setting the same flag gets the same checks;
  // --help prints our table (help()), with every default.
  std::vector<std::pair<CLI::Option*, Flag*>> options;
  for (Flag& f : flags_) {
    CLI::Option* opt = f.is_switch
                           ? app.add_flag("--" + f.name + "{true},!--no-" + f.name + "{false}")
                           : app.add_option("--" + f.name)->type_name(f.kind);
    opt->description(f.help)
        ->default_str(f.default_text)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    options.emplace_back(opt, &f);
  }
  std::vector<std::pair<CLI::Option*, Flag*>> aliases;
  for (const auto& [old_name, new_name] : deprecated_) {
    Flag& f = flags_.at(index_.at(new_name));
    CLI::Option* opt = f.is_switch
                           ? app.add_flag("--" + old_name + "{true},!--no-" + old_name + "{false}")
                           : app.add_option("--" + old_name);
    opt->group("")->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // hidden from --help
    aliases.emplace_back(opt, &f);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(help().c_str(), stdout);
    return false;
  } catch (const CLI::CallForVersion&) {
    std::printf("%s %s\n", name.c_str(), SPRUCE_VERSION);
    return false;
  } catch (const CLI::ExtrasError&) {
    const std::vector<std::string> extra = app.remaining();
    const std::string arg = extra.empty() ? std::string("?") : extra.front();
    if (arg.rfind("-", 0) == 0)
      throw UsageError("unknown flag " + arg.substr(0, arg.find('=')) + " (see --help)");
    throw UsageError("unexpected argument '" + arg + "' (flags start with --; see --help)");
  } catch (const CLI::ArgumentMismatch& e) {  // "--epochs: 1 required INT missing"
    const std::string what = e.what();
    throw UsageError(what.substr(0, what.find(':')) + " needs a value (see --help)");
  } catch (const CLI::ParseError& e) {
    throw UsageError(e.what());
  }
  for (const auto& [opt, flag] : aliases) {
    if (opt->count() == 0) continue;
    warn("--" + opt->get_lnames().front() + " is deprecated, use --" + flag->name);
    set_value(*flag, opt->as<std::string>(), "");
    given_[flag->name] = true;
  }
  for (const auto& [opt, flag] : options) {
    if (opt->count() == 0) continue;
    set_value(*flag, opt->as<std::string>(), "");
    given_[flag->name] = true;
  }
  return true;
}

bool Args::given(const std::string& name) const { return given_.count(name) > 0; }

std::string Args::value(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw UsageError("unknown flag --" + name + " (see --help)");
  return flags_[it->second].get();
}

void Args::apply_defaults(const std::vector<std::pair<std::string, std::string>>& settings,
                          const std::string& source) {
  for (const auto& [name, value] : settings) {
    auto it = index_.find(name);
    if (it == index_.end())
      throw UsageError(source + ": unknown setting '" + name + "' (see --help)");
    if (given(name)) continue;
    set_value(flags_[it->second], value, source);
  }
}

std::vector<std::pair<std::string, std::string>> Args::values() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : flags_) out.emplace_back(f.name, f.get());
  return out;
}

std::string Args::help() const {
  std::ostringstream os;
  os << "usage: " << program_ << " [flags]\n\n" << summary_ << "\n\nflags:\n";
  for (const auto& f : flags_) {
    std::string left = "  --" + (f.is_switch ? "[no-]" + f.name : f.name + " " + f.kind);
    if (left.size() < 34)
      left.resize(34, ' ');
    else
      left += "\n" + std::string(34, ' ');
    os << left << f.help;
    if (!f.default_text.empty()) os << " (default: " << f.default_text << ")";
    os << '\n';
  }
  os << "  --help                          show this help\n";
  os << "  --version                       print the spruce version\n";
  return os.str();
}

int run_tool(const char* program, const std::function<int()>& body) {
  set_warning_handler([program](const std::string& message) {
    std::fprintf(stderr, "%s: warning: %s\n", program, message.c_str());
  });
  // Under mpirun: only rank 0 prints; an error on any rank ends the whole
  // job (the other ranks would wait forever in their next collective).
  Communicator* comm = nullptr;
  auto fail = [&](int code, const std::string& what) {
    const std::string where =
        comm != nullptr && comm->size() > 1 ? " (rank " + std::to_string(comm->rank()) + ")" : "";
    const std::string message = std::string(program) + where + ": error: " + what;
    if (comm != nullptr && comm->size() > 1) comm->abort(code, message);
    std::fprintf(stderr, "%s\n", message.c_str());
    return code;
  };
  try {
    comm = &world();
    if (!comm->is_root() && std::freopen("/dev/null", "w", stdout) == nullptr)
      throw IoError("/dev/null: cannot open for rank " + std::to_string(comm->rank()) +
                    "'s output");
    return body();
  } catch (const Stopped& e) {  // every rank stopped together: no abort
    if (comm == nullptr || comm->is_root()) std::fprintf(stderr, "%s: %s\n", program, e.what());
    return e.status();
  } catch (const UsageError& e) {
    return fail(2, e.what());
  } catch (const std::exception& e) {
    return fail(1, e.what());
  }
}

}  // namespace spruce::cli
