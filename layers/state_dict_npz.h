// A module's state_dict to and from NumPy .npz files: the PyTorch interchange.
//
// PyTorch -> spruce: a state_dict saved the usual way,
//   np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
// loads into a spruce module with the same architecture and names, with
// PyTorch's dtypes as they are (float32, float64, int64 num_batches_tracked,
// bool or uint8 masks; see core/io/npz.h), num_batches_tracked may be absent.
//
// spruce -> PyTorch: save_npz with MaskExport::kFold writes weight * mask
// under the plain weight names and no mask entries, so
//   model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(path).items()})
// accepts it in a plain (unpruned) PyTorch model; torch's copy_ casts the
// float32 num_batches_tracked to int64. MaskExport::kKeep also writes the
// "<param>_mask" entries, for spruce (or torch.nn.utils.prune) to reload.
#pragma once

#include <string>

#include "module.h"

namespace spruce {

enum class MaskExport { kKeep, kFold };

/// Loads `path` into `module` (see Module::load_state_dict for `strict`).
/// Every error is one line starting with the path and naming the key: a
/// missing or unexpected key, a shape mismatch (expected and given shape).
void load_npz(Module& module, const std::string& path, bool strict = true);

/// Writes the module's state_dict to `path` (atomically; see io::write_npz).
void save_npz(const Module& module, const std::string& path, MaskExport masks = MaskExport::kKeep);

}  // namespace spruce
