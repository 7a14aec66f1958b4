// Model checkpoints and .npz files for the tools.
#include "tools/common/model_io.h"

#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/io/npz.h"
#include "core/io/sparse_checkpoint.h"
#include "core/warning.h"

namespace spruce::cli {
namespace {
constexpr const char* kPrefix = "model/";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t meta_int(const io::Checkpoint& ckpt, const std::string& key) {
  const std::string& v = ckpt.meta_value(key);
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw FormatError(ckpt.source + ": metadata '" + key + "' is '" + v + "', expected an integer");
}
}  // namespace

namespace {
/// Whether two option values are the same text or the same number ("1", "1.0").
bool same_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  try {
    size_t ua = 0, ub = 0;
    const double x = std::stod(a, &ua), y = std::stod(b, &ub);
    return ua == a.size() && ub == b.size() && x == y;
  } catch (const std::exception&) {
    return false;
  }
}

/// The value the model uses for option `o`: config's, or the default.
std::string effective(const models::ModelConfig& config, const models::ModelOption& o) {
  auto it = config.options.find(o.name);
  return it == config.options.end() || it->second.empty() ? o.default_value : it->second;
}
}  // namespace

void add_model_option_flags(Args& args, std::map<std::string, std::string>& values) {
  for (const models::ModelOption& o : models::all_model_options())
    args.add_string(o.name, &values[o.name], o.help + " (default " + o.default_value + ")");
}

std::map<std::string, std::string> model_options_for(
    const std::string& name, const std::map<std::string, std::string>& values) {
  const std::vector<models::ModelOption> takes = models::model_options(name);
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : values) {
    bool taken = false;
    for (const models::ModelOption& o : takes) taken = taken || o.name == key;
    if (taken) {
      out[key] = value;
      continue;
    }
    if (value.empty()) continue;
    for (const models::ModelOption& o : models::all_model_options())
      if (o.name == key && same_value(value, o.default_value)) taken = true;
    if (!taken)
      throw UsageError("--" + key + " " + value + ": model " + name + " does not take this option");
  }
  return out;
}

std::string ModelSpec::describe() const {
  std::ostringstream os;
  os << name << " (in " << config.in_channels << ", classes " << config.num_classes;
  for (const models::ModelOption& o : models::model_options(name))
    os << ", " << o.name << ' ' << effective(config, o);
  os << ')';
  return os.str();
}

void put_model(io::Checkpoint& ckpt, const ModelSpec& spec, const Module& module) {
  ckpt.set_meta("model.name", spec.name);
  ckpt.set_meta("model.in_channels", std::to_string(spec.config.in_channels));
  ckpt.set_meta("model.num_classes", std::to_string(spec.config.num_classes));
  for (const models::ModelOption& o : models::model_options(spec.name))
    ckpt.set_meta("model." + o.name, effective(spec.config, o));
  for (const auto& [key, value] : module.state_dict()) ckpt.set_tensor(kPrefix + key, value);
}

ModelSpec model_spec_from(const io::Checkpoint& ckpt) {
  for (const char* key : {"model.name", "model.in_channels", "model.num_classes"})
    if (!ckpt.has_meta(key))
      throw FormatError(ckpt.source + ": metadata '" + key +
                        "' is missing, expected a spruce model checkpoint");
  ModelSpec spec;
  spec.name = ckpt.meta_value("model.name");
  std::vector<models::ModelOption> takes;
  try {
    takes = models::model_options(spec.name);
  } catch (const UsageError& e) {
    throw FormatError(ckpt.source + ": metadata 'model.name': " + e.what());
  }
  spec.config.in_channels = meta_int(ckpt, "model.in_channels");
  spec.config.num_classes = meta_int(ckpt, "model.num_classes");
  for (const models::ModelOption& o : takes) {
    const std::string key = "model." + o.name;
    if (!ckpt.has_meta(key))
      throw FormatError(ckpt.source + ": metadata '" + key + "' is missing, expected the " +
                        spec.name + " option " + o.name);
    spec.config.options[o.name] = ckpt.meta_value(key);
  }
  return spec;
}

NamedTensors model_state_from(const io::Checkpoint& ckpt) {
  NamedTensors state;
  const std::string prefix = kPrefix;
  for (const auto& [name, value] : ckpt.tensors)
    if (name.rfind(prefix, 0) == 0) state.emplace_back(name.substr(prefix.size()), value);
  return state;
}

LoadedModel load_model(const std::string& path, const ModelSpec& npz_spec) {
  LoadedModel loaded;
  NamedTensors state;
  if (ends_with(path, ".npz")) {
    loaded.spec = npz_spec;
    state = io::read_npz(path);
  } else {
    loaded.checkpoint = io::load_checkpoint(path);
    if (io::is_compressed(loaded.checkpoint))
      loaded.checkpoint = io::expand_checkpoint(loaded.checkpoint);
    loaded.spec = model_spec_from(loaded.checkpoint);
    state = model_state_from(loaded.checkpoint);
  }
  try {
    loaded.module = models::build_model(loaded.spec.name, loaded.spec.config);
  } catch (const UsageError& e) {
    if (!loaded.checkpoint.source.empty()) throw FormatError(path + ": " + e.what());
    throw;
  }
  try {
    loaded.module->load_state_dict(state);
  } catch (const Error& e) {
    throw FormatError(path + ": " + e.what());
  }
  return loaded;
}

uint64_t save_compact(const std::string& path, const io::Checkpoint& ckpt) {
  io::save_checkpoint(path, io::compress_checkpoint(ckpt));
  return std::filesystem::file_size(path);
}

void export_npz(const std::string& path, const Module& module) {
  io::write_npz(path, module.state_dict());
}

namespace {
bool is_model_name(const std::string& name) {
  for (const auto& m : models::model_names())
    if (m == name) return true;
  return false;
}

std::string model_names_text() {
  std::string out;
  for (const auto& n : models::model_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace

void add_architecture_flag(Args& args, std::string& name) {
  args.add_string("model", &name,
                  "for .npz files: model architecture (" + model_names_text() + ")");
  args.add_deprecated("arch", "model");
}

void check_model_flag(const std::string& name) {
  if (!name.empty() && !is_model_name(name))
    throw UsageError("--model: unknown value '" + name +
                     "', expected one of: " + model_names_text());
}

void NpzModelFlags::add_to(Args& args) {
  add_architecture_flag(args, name);
  args.add_int("in-channels", &in_channels, "for .npz files: input channels", 1, 3);
  args.add_int("num-classes", &num_classes, "for .npz files: number of classes", 2);
  add_model_option_flags(args, options);
}

ModelSpec NpzModelFlags::spec() const {
  check_model_flag(name);
  ModelSpec s;
  s.name = name;
  s.config.in_channels = in_channels;
  s.config.num_classes = num_classes;
  s.config.options = model_options_for(name, options);
  return s;
}

std::vector<char*> old_model_flag_as_checkpoint(int argc, char** argv) {
  static char checkpoint[] = "--checkpoint";
  std::vector<char*> out(argv, argv + argc);
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--model" && !is_model_name(argv[i + 1]) &&
        std::filesystem::is_regular_file(argv[i + 1])) {
      warn("--model FILE is deprecated: --model names an architecture; use --checkpoint " +
           std::string(argv[i + 1]));
      out[static_cast<size_t>(i)] = checkpoint;
    }
  return out;
}

}  // namespace spruce::cli
