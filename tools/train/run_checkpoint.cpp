// What a spruce-train checkpoint holds and how a run is restored from one:
// the settings (put_settings), the step counters and the epoch's running
// sums (doubles as hex floats, so that they read back bit for bit), the logs
// written so far, the model with its masks and the optimizer's velocities.
// Also the log files themselves, which are rewritten whole from the text the
// checkpoint keeps.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "tools/common/datasets.h"
#include "tools/common/report.h"
#include "tools/train/run.h"

namespace spruce::train {

namespace {

std::string exact(double d) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%a", d);  // hex float: reads back bit for bit
  return buf;
}

double parse_exact(const io::Checkpoint& ck, const std::string& key) {
  const std::string& v = ck.meta_value(key);
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0')
    throw FormatError(ck.source + ": metadata '" + key + "' is not a number");
  return d;
}

int64_t parse_int(const io::Checkpoint& ck, const std::string& key) {
  return static_cast<int64_t>(parse_exact(ck, key));
}

const char* kCsvHeader =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,epoch_seconds,img_per_s,sparsity\n";

const char* kPruneCsvHeader =
    "unit,t,epoch,step,target,sparsity,predicted_loss_increase,test_loss_before,test_loss_after,"
    "test_acc_before,test_acc_after,collect_seconds,inverse_seconds\n";

}  // namespace

void Run::start_logs() { csv_ = kCsvHeader, prune_csv_ = kPruneCsvHeader; }

void Run::save_checkpoint(const std::string& name) const {
  if (!comm_.is_root()) return;  // one writer; every rank holds the same state
  io::Checkpoint ck;
  ck.set_meta("kind", "spruce-train");
  put_settings(ck, args_);
  ck.set_meta("train.samples", std::to_string(train_view_->size()));
  ck.set_meta("train.ranks", std::to_string(comm_.size()));
  ck.set_meta("train.epoch", std::to_string(epoch_));
  ck.set_meta("train.batch", std::to_string(batch_in_epoch_));
  ck.set_meta("train.global_step", std::to_string(global_step_));
  ck.set_meta("train.optimizer_steps", std::to_string(opt_->steps()));
  ck.set_meta("train.loss_sum", exact(stats_.loss_sum));
  ck.set_meta("train.correct", std::to_string(stats_.correct));
  ck.set_meta("train.seen", std::to_string(stats_.seen));
  ck.set_meta("train.seconds", exact(stats_.seconds));
  ck.set_meta("log.csv", csv_);
  ck.set_meta("log.jsonl", jsonl_);
  ck.set_meta("log.prune_csv", prune_csv_);
  cli::put_model(ck, spec_, *model_);
  for (const auto& [pname, v] : opt_->state()) ck.set_tensor("optim/" + pname, v);
  io::save_checkpoint((out_ / name).string(), ck);
}

void Run::restore(const io::Checkpoint& ck) {
  // Batches are a function of the sample count; other data would be another run.
  if (ck.has_meta("train.samples") && parse_int(ck, "train.samples") != train_view_->size())
    throw UsageError("the " + s_.data + " training data in " +
                     (s_.data_dir.empty() ? cli::default_data_dir(s_.data) : s_.data_dir) +
                     " has " + std::to_string(train_view_->size()) + " samples, but the run in " +
                     ck.source + " was trained on " + ck.meta_value("train.samples") +
                     "; --resume needs the same data");
  // Each rank trains on its shard of every batch: other ranks, other shards.
  const int64_t ranks = ck.has_meta("train.ranks") ? parse_int(ck, "train.ranks") : 1;
  if (ranks != comm_.size())
    throw UsageError("the run in " + ck.source + " was trained on " + std::to_string(ranks) +
                     " rank(s), this one has " + std::to_string(comm_.size()) +
                     "; --resume needs the same number (mpirun -np " + std::to_string(ranks) +
                     "), or start a new run with --init " + ck.source);
  model_->load_state_dict(cli::model_state_from(ck));
  optim::NamedTensors velocity;
  for (const auto& [name, t] : ck.tensors)
    if (name.rfind("optim/", 0) == 0) velocity.emplace_back(name.substr(6), t);
  opt_->load_state(velocity, parse_int(ck, "train.optimizer_steps"), ck.source);
  epoch_ = parse_int(ck, "train.epoch");
  batch_in_epoch_ = parse_int(ck, "train.batch");
  global_step_ = parse_int(ck, "train.global_step");
  stats_.loss_sum = parse_exact(ck, "train.loss_sum");
  stats_.correct = parse_int(ck, "train.correct");
  stats_.seen = parse_int(ck, "train.seen");
  stats_.seconds = parse_exact(ck, "train.seconds");
  csv_ = ck.meta_value("log.csv");
  jsonl_ = ck.meta_value("log.jsonl");
  prune_csv_ = ck.meta_value("log.prune_csv");
  loader_->seek(epoch_, batch_in_epoch_);
}

void Run::write_logs() const {
  if (!comm_.is_root()) return;
  cli::write_text_file((out_ / "log.csv").string(), csv_);
  cli::write_text_file((out_ / "log.jsonl").string(), jsonl_);
  if (pruner_) cli::write_text_file((out_ / "pruning.csv").string(), prune_csv_);
}

}  // namespace spruce::train
