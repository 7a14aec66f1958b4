// Models on disk for the tools. A spruce checkpoint (core/io/checkpoint.h)
// stores the model's registry name and config as metadata and every entry of
// its state_dict (parameters, buffers, masks) as the tensor "model/<key>";
// training state (optimizer, loader, RNG) is stored beside it by the train
// tool. A NumPy .npz holds the state_dict keys alone, so loading one needs
// the model name and config from the command line.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "layers/module.h"
#include "models/registry.h"
#include "tools/common/args.h"

namespace spruce::cli {

/// Declares --model NAME onto `name`: the architecture of a model read from
/// an .npz (a checkpoint names its own). Tools that read a model file call
/// this and take the file as --checkpoint; check_model_flag() validates.
void add_architecture_flag(Args& args, std::string& name);
/// UsageError unless `name` is empty or a registered model.
void check_model_flag(const std::string& name);

/// Before --checkpoint, the tools that read a model file took it as --model:
/// "--model FILE" (FILE exists and is no architecture) is rewritten to
/// "--checkpoint FILE" with a deprecation warning. Returns the new argv.
std::vector<char*> old_model_flag_as_checkpoint(int argc, char** argv);

/// Adds a flag --<option> for every option some registered model takes (its
/// registry row declares it); values land in `values`, where empty means the
/// model's default.
void add_model_option_flags(Args& args, std::map<std::string, std::string>& values);

/// The entries of `values` that model `name` takes. Any other entry must be
/// empty or the option's default (older runs saved every option for every
/// model); a real value for an option the model does not take is a
/// UsageError naming the flag.
std::map<std::string, std::string> model_options_for(
    const std::string& name, const std::map<std::string, std::string>& values);

struct ModelSpec {
  std::string name = "resnet20";
  models::ModelConfig config;
  /// "resnet20 (in 1, classes 10, shortcut A)" for logs: every option the
  /// model takes, with its default where config.options has none.
  std::string describe() const;
};

/// Writes the spec as metadata and the module's state as "model/<key>" tensors.
void put_model(io::Checkpoint& ckpt, const ModelSpec& spec, const Module& module);
/// Reads the spec back; FormatError naming the file when it is missing or wrong.
ModelSpec model_spec_from(const io::Checkpoint& ckpt);
/// The "model/<key>" tensors as a state dict.
NamedTensors model_state_from(const io::Checkpoint& ckpt);

/// The flags that say which model an .npz holds: --model, --in-channels,
/// --num-classes and every model option (--shortcut, --width). A checkpoint
/// names its own model; an .npz, PyTorch's state_dict, needs them. Every tool
/// that reads a model file declares them with add_to() and gets the spec
/// from spec() after parsing.
struct NpzModelFlags {
  std::string name = "resnet20";
  int64_t in_channels = 1;
  int64_t num_classes = 10;
  std::map<std::string, std::string> options;  // empty: the model's default

  void add_to(Args& args);
  /// The model the flags describe; UsageError naming a flag that is wrong.
  ModelSpec spec() const;
};

struct LoadedModel {
  ModelSpec spec;
  std::unique_ptr<Module> module;
  io::Checkpoint checkpoint;  // empty meta/tensors for .npz files
};

/// Loads a checkpoint (".ckpt" or any other name; compact ones too) or an ".npz" (which needs
/// `npz_spec`). The module is rebuilt from the registry and its state loaded
/// strictly: a checkpoint of another architecture fails with the key named.
LoadedModel load_model(const std::string& path, const ModelSpec& npz_spec);

/// Writes the model as a compact checkpoint (core/io/sparse_checkpoint.h):
/// `ckpt` (metadata and tensors, put_model's included) with every mostly-zero
/// tensor and every mask as a bitmask plus its nonzeros. load_model reads it
/// like any checkpoint. Returns the file's size in bytes.
uint64_t save_compact(const std::string& path, const io::Checkpoint& ckpt);

/// Exports the module's state_dict to .npz (keys as PyTorch's state_dict;
/// masks are included as "<param>_mask").
void export_npz(const std::string& path, const Module& module);

}  // namespace spruce::cli
