// Epoch snapshots beside a run's last checkpoint: "epoch-K.ckpt" for the
// last N epochs (spruce-train --keep-checkpoints N), for going back to an
// earlier point of a long run.
//
// A snapshot is a hard link to the just-written checkpoint (no second copy
// on disk; last.ckpt is always replaced by a rename, so the linked file
// never changes), or a copy where the filesystem has no hard links. It is
// made under a temporary name and renamed into place like every file spruce
// writes, and older snapshots are removed only after the new one is in
// place, so a crash or a full disk never leaves fewer than N good ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spruce::io {

/// "epoch-<epoch>.ckpt".
std::string snapshot_name(int64_t epoch);

/// The epochs K of the "epoch-K.ckpt" files in `dir`, ascending.
std::vector<int64_t> list_snapshots(const std::string& dir);

/// Snapshots `checkpoint` (a complete file) as <its folder>/epoch-<epoch>.ckpt,
/// replacing one of that name, then removes the snapshots of epochs before
/// the `keep` most recent ones up to `epoch` (later epochs, left by another
/// run in the folder, are not touched). keep >= 1. Throws IoError naming the
/// snapshot when it cannot be written; nothing is removed then.
void save_snapshot(const std::string& checkpoint, int64_t epoch, int64_t keep);

}  // namespace spruce::io
