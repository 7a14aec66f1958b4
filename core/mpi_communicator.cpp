// The MPI communicator over MPI_COMM_WORLD (built only with the Meson option
// `mpi`). MPI is initialised on first use and finalised at exit. Messages
// larger than MPI's int counts are cut into pieces of kPiece bytes. Errors
// inside MPI keep MPI's default handler (MPI_ERRORS_ARE_FATAL): the job ends.
// The C API only: the deprecated C++ bindings mpi.h would pull in warn.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "communicator.h"

namespace spruce {
namespace {

constexpr int64_t kPiece = int64_t{1} << 30;  // bytes per MPI call

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(std::span<float> data) override {
    reduce(data.data(), static_cast<int64_t>(data.size()), MPI_FLOAT, MPI_SUM);
  }
  void allreduce_sum(std::span<double> data) override {
    reduce(data.data(), static_cast<int64_t>(data.size()), MPI_DOUBLE, MPI_SUM);
  }
  void allreduce_max(std::span<double> data) override {
    reduce(data.data(), static_cast<int64_t>(data.size()), MPI_DOUBLE, MPI_MAX);
  }
  void broadcast_bytes(void* data, int64_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (int64_t at = 0; at < bytes; at += kPiece)
      MPI_Bcast(p + at, static_cast<int>(std::min(kPiece, bytes - at)), MPI_BYTE, root,
                MPI_COMM_WORLD);
  }
  void exchange_bytes(const void* send, int64_t send_bytes, int to, void* recv, int64_t recv_bytes,
                      int from) override {
    const auto* s = static_cast<const char*>(send);
    auto* r = static_cast<char*>(recv);
    // Both sides walk their pieces in step; a side with fewer bytes sends
    // (or receives) empty pieces until the other is done.
    for (int64_t at = 0; at < std::max(send_bytes, recv_bytes); at += kPiece) {
      const int sn = static_cast<int>(std::clamp<int64_t>(send_bytes - at, 0, kPiece));
      const int rn = static_cast<int>(std::clamp<int64_t>(recv_bytes - at, 0, kPiece));
      MPI_Sendrecv(s + std::min(at, send_bytes), sn, MPI_BYTE, to, 0, r + std::min(at, recv_bytes),
                   rn, MPI_BYTE, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  [[noreturn]] void abort(int code, const std::string& message) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
  }

 private:
  void reduce(void* data, int64_t count, MPI_Datatype type, MPI_Op op) {
    int item = 0;
    MPI_Type_size(type, &item);
    const int64_t per_call = kPiece / item;
    auto* p = static_cast<char*>(data);
    for (int64_t at = 0; at < count; at += per_call)
      MPI_Allreduce(MPI_IN_PLACE, p + at * item, static_cast<int>(std::min(per_call, count - at)),
                    type, op, MPI_COMM_WORLD);
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace

Communicator& mpi_world() {
  static MpiCommunicator instance;
  return instance;
}

}  // namespace spruce
