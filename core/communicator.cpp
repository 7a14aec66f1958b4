// The single-process communicator, the choice of the process's communicator
// and the even split of work over ranks.
#include "communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"

namespace spruce {

#ifdef SPRUCE_HAVE_MPI
Communicator& mpi_world();  // mpi_communicator.cpp
#endif

namespace {

/// The rank count a launcher (Open MPI's mpirun, or a PMI one) gave this
/// process, or 0 when none started it.
int launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

}  // namespace

std::vector<int64_t> Communicator::allgather(int64_t value) {
  std::vector<int64_t> all(static_cast<size_t>(size()), 0);
  all[static_cast<size_t>(rank())] = value;
  for (int r = 0; r < size(); ++r)
    broadcast(std::span<int64_t>(&all[static_cast<size_t>(r)], 1), r);
  return all;
}

void SingleProcess::exchange_bytes(const void* send, int64_t send_bytes, int to, void* recv,
                                   int64_t recv_bytes, int from) {
  if (to != 0 || from != 0 || send_bytes != recv_bytes)
    throw UsageError("exchange_bytes: a single process can only exchange with itself");
  if (send_bytes > 0 && send != recv) std::memmove(recv, send, static_cast<size_t>(send_bytes));
}

void SingleProcess::abort(int code, const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::exit(code);
}

Communicator& world() {
  static Communicator* const instance = []() -> Communicator* {
    const int launched = launcher_size();
#ifdef SPRUCE_HAVE_MPI
    if (launched > 0) return &mpi_world();
#else
    if (launched > 1)
      throw UsageError("started as one of " + std::to_string(launched) +
                       " ranks, but this spruce was built without MPI (install libopenmpi-dev and "
                       "reconfigure with -Dmpi=enabled)");
#endif
    static SingleProcess solo;
    return &solo;
  }();
  return *instance;
}

bool built_with_mpi() {
#ifdef SPRUCE_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::pair<int64_t, int64_t> shard(int64_t n, int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks || n < 0)
    throw UsageError("shard: rank " + std::to_string(rank) + " of " + std::to_string(ranks) +
                     " for " + std::to_string(n) + " items");
  const int64_t base = n / ranks, extra = n % ranks;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace spruce
