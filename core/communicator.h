// Communicator: the few collective operations that spruce's multi-process
// work needs (data-parallel training, distributed WoodFisher), behind one
// small interface so that nothing above core/ names MPI. A process started
// by `mpirun -np N` in a build with MPI (Meson option `mpi`) gets an MPI
// communicator over all N ranks; every other process, and every build
// without MPI, gets the single-process one, where each collective is the
// identity and a run is exactly what it was before MPI existed.
//
// Collectives must be called by every rank in the same order with the same
// sizes (the MPI rule); spruce only calls them from the main thread.
// Counts are int64: implementations cut large messages into pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace spruce {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool is_root() const { return rank() == 0; }

  /// Element-wise sum over ranks, in place; every rank gets the same bits.
  virtual void allreduce_sum(std::span<float> data) = 0;
  virtual void allreduce_sum(std::span<double> data) = 0;
  /// Element-wise maximum over ranks, in place.
  virtual void allreduce_max(std::span<double> data) = 0;
  /// Copies `bytes` bytes at data from rank `root` to every other rank.
  virtual void broadcast_bytes(void* data, int64_t bytes, int root) = 0;
  /// Sends `send_bytes` to rank `to` while receiving `recv_bytes` from rank
  /// `from` (a pairwise exchange step; to == from == rank() copies).
  virtual void exchange_bytes(const void* send, int64_t send_bytes, int to, void* recv,
                              int64_t recv_bytes, int from) = 0;
  virtual void barrier() = 0;
  /// Ends every rank of the job with exit status `code` after printing
  /// `message` once on stderr. Used when a rank cannot go on: the others
  /// would otherwise wait forever in their next collective.
  [[noreturn]] virtual void abort(int code, const std::string& message) = 0;

  template <class T>
  void broadcast(std::span<T> data, int root) {
    broadcast_bytes(data.data(), static_cast<int64_t>(data.size_bytes()), root);
  }
  /// Every rank's `counts[r]` elements, rank after rank: rank r's part is
  /// all[offset_r, offset_r + counts[r]) and on entry holds its own values.
  template <class T>
  void allgather_in_place(std::span<T> all, std::span<const int64_t> counts) {
    int64_t offset = 0;
    for (int r = 0; r < size(); ++r) {
      broadcast(all.subspan(static_cast<size_t>(offset), static_cast<size_t>(counts[r])), r);
      offset += counts[r];
    }
  }
  /// One value per rank, in rank order.
  std::vector<int64_t> allgather(int64_t value);
};

/// The single-process communicator (rank 0 of 1).
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(std::span<float>) override {}
  void allreduce_sum(std::span<double>) override {}
  void allreduce_max(std::span<double>) override {}
  void broadcast_bytes(void*, int64_t, int) override {}
  void exchange_bytes(const void* send, int64_t send_bytes, int to, void* recv, int64_t recv_bytes,
                      int from) override;
  void barrier() override {}
  [[noreturn]] void abort(int code, const std::string& message) override;
};

/// The process's communicator: MPI_COMM_WORLD when this build has MPI and
/// the process was started by mpirun, else SingleProcess. The first call
/// initialises MPI (call it early in main, from the main thread). Throws
/// spruce::Error when mpirun started several ranks of a build without MPI
/// (each would run the whole job alone and write the same files).
Communicator& world();

/// Whether this build has MPI support.
bool built_with_mpi();

/// Rank r's share [begin, end) of n items split as evenly as possible over
/// `ranks` ranks in rank order (the first n % ranks ranks get one more).
std::pair<int64_t, int64_t> shard(int64_t n, int rank, int ranks);

}  // namespace spruce
