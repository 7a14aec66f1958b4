// Module state dicts in .npz files (PyTorch interchange; see state_dict_npz.h).
#include "state_dict_npz.h"

#include <set>

#include "../core/error.h"
#include "../core/io/npz.h"
#include "../core/ops/elementwise.h"

namespace spruce {

void load_npz(Module& module, const std::string& path, bool strict) {
  const NamedTensors state = io::read_npz(path);  // its errors already name the file
  try {
    module.load_state_dict(state, strict);
  } catch (const Error& e) {
    throw FormatError(path + ": " + e.what());
  }
}

void save_npz(const Module& module, const std::string& path, MaskExport masks) {
  NamedTensors state = module.state_dict();
  if (masks == MaskExport::kFold) {
    std::set<std::string> mask_keys;
    const NamedTensors named_masks = module.named_masks();
    for (const auto& [param, mask] : named_masks) mask_keys.insert(param + "_mask");
    NamedTensors folded;
    for (auto& [key, value] : state) {
      if (mask_keys.count(key)) continue;
      Tensor v = value;
      for (const auto& [param, mask] : named_masks)
        if (param == key) v = ops::mul_mask(value, mask).detach();
      folded.emplace_back(key, v);
    }
    state = std::move(folded);
  }
  io::write_npz(path, state);
}

}  // namespace spruce
