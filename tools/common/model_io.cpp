// Model checkpoints and .npz files for the tools.
#include "tools/common/model_io.h"

#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/io/npz.h"
#include "core/io/sparse_checkpoint.h"

namespace spruce::cli {
namespace {
constexpr const char* kPrefix = "model/";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
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

std::string ModelSpec::describe() const {
  std::ostringstream os;
  os << name << " (in " << config.in_channels << ", classes " << config.num_classes;
  if (name.rfind("resnet", 0) == 0) os << ", shortcut " << config.shortcut;
  if (name == "mobilenet_v1") os << ", width " << config.width;
  os << ')';
  return os.str();
}

void put_model(io::Checkpoint& ckpt, const ModelSpec& spec, const Module& module) {
  ckpt.set_meta("model.name", spec.name);
  ckpt.set_meta("model.in_channels", std::to_string(spec.config.in_channels));
  ckpt.set_meta("model.num_classes", std::to_string(spec.config.num_classes));
  ckpt.set_meta("model.shortcut", std::string(1, spec.config.shortcut));
  std::ostringstream width;
  width.precision(9);
  width << spec.config.width;
  ckpt.set_meta("model.width", width.str());
  for (const auto& [key, value] : module.state_dict()) ckpt.set_tensor(kPrefix + key, value);
}

ModelSpec model_spec_from(const io::Checkpoint& ckpt) {
  for (const char* key : {"model.name", "model.in_channels", "model.num_classes", "model.shortcut", "model.width"})
    if (!ckpt.has_meta(key))
      throw FormatError(ckpt.source + ": metadata '" + key + "' is missing, expected a spruce model checkpoint");
  ModelSpec spec;
  spec.name = ckpt.meta_value("model.name");
  spec.config.in_channels = meta_int(ckpt, "model.in_channels");
  spec.config.num_classes = meta_int(ckpt, "model.num_classes");
  const std::string& sc = ckpt.meta_value("model.shortcut");
  if (sc.size() != 1) throw FormatError(ckpt.source + ": metadata 'model.shortcut' is '" + sc + "', expected A or B");
  spec.config.shortcut = sc[0];
  try {
    spec.config.width = std::stof(ckpt.meta_value("model.width"));
  } catch (const std::exception&) {
    throw FormatError(ckpt.source + ": metadata 'model.width' is not a number");
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
  loaded.module = models::build_model(loaded.spec.name, loaded.spec.config);
  try {
    loaded.module->load_state_dict(state);
  } catch (const Error& e) {
    throw FormatError(path + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw FormatError(path + ": " + e.what());
  }
  return loaded;
}

uint64_t save_compact(const std::string& path, const io::Checkpoint& ckpt) {
  io::save_checkpoint(path, io::compress_checkpoint(ckpt));
  return std::filesystem::file_size(path);
}

void export_npz(const std::string& path, const Module& module) { io::write_npz(path, module.state_dict()); }

}  // namespace spruce::cli
