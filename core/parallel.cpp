// A small persistent pool: n-1 workers plus the calling thread. A job is
// split into at most n static chunks; chunk 0 runs on the caller.
//
// A training step runs a few hundred short parallel regions (every conv,
// batch norm and elementwise op), so a worker that has just finished a chunk
// spins briefly for the next job before it blocks on a condition variable,
// and the caller spins briefly for the workers before blocking: a futex
// wake-up costs tens of microseconds, more on a busy machine. The spins are
// short (kSpin) so that an idle pool costs nothing.
#include "parallel.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace spruce {
namespace {

constexpr auto kSpin = std::chrono::microseconds(50);

/// Spins until pred() or kSpin has passed; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  while (true) {
    for (int i = 0; i < 32; ++i) {
      if (pred()) return true;
      _mm_pause();
    }
    if (std::chrono::steady_clock::now() > deadline) return pred();
  }
}

class Pool {
 public:
  ~Pool() { resize(1); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_.store(true);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_.store(false);
    // New workers start at the current generation, so they wait for the next job.
    const uint64_t start = generation_.load();
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, start] { loop(i, start); });
  }

  void run(int chunks, const std::function<void(int)>& task) {
    // One job at a time: a second outside thread (say, a data-loader
    // thread) that finds the pool busy runs its chunks itself, in order.
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy) {
      for (int c = 0; c < chunks; ++c) task(c);
      return;
    }
    task_.store(&task, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    error_ = nullptr;
    // Every worker acknowledges every job, even one it sits out, so none can
    // lag behind into the next job with a stale view of this one.
    pending_.store(size() - 1, std::memory_order_relaxed);
    {
      // Under the lock, so a worker about to block sees either the new
      // generation or the notification.
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    std::exception_ptr mine;
    try {
      task(0);
    } catch (...) {
      mine = std::current_exception();
    }
    auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(done)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, done);
    }
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int index, uint64_t seen) {
    while (true) {
      auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_.load() || fresh(); });
      }
      if (stop_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      if (index < chunks_.load(std::memory_order_relaxed)) {
        try {
          (*task_.load(std::memory_order_relaxed))(index);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu_);
          if (!error_) error_ = std::current_exception();
        }
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_cv_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // held by the thread whose job the pool is running
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  // Written by run() before the generation is bumped (release) and read by
  // workers after they see it (acquire).
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> chunks_{0};
  std::exception_ptr error_;  // first worker exception; guarded by mu_
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

Pool& pool() {
  static Pool p;
  return p;
}

int g_threads = 0;                            // 0 = not yet initialised
thread_local bool t_inside_parallel = false;  // nested calls run serially
thread_local int t_limit = 0;                 // a ThreadLimit's n; 0 = none

void ensure_init() {
  if (g_threads == 0) set_num_threads(default_num_threads());
}

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("SPRUCE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

void set_num_threads(int n) {
  n = std::max(1, n);
  g_threads = n;
  openblas_set_num_threads(1);
  if (pool().size() != n) pool().resize(n);
}

int num_threads() {
  ensure_init();
  return t_limit > 0 ? std::min(g_threads, t_limit) : g_threads;
}

ThreadLimit::ThreadLimit(int n) : previous_(t_limit) {
  n = std::max(1, n);
  t_limit = previous_ > 0 ? std::min(previous_, n) : n;
}

ThreadLimit::~ThreadLimit() { t_limit = previous_; }

bool in_parallel_region() { return t_inside_parallel; }

void ensure_single_threaded_blas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

BlasThreadsGuard::BlasThreadsGuard() { openblas_set_num_threads(num_threads()); }

BlasThreadsGuard::~BlasThreadsGuard() { openblas_set_num_threads(1); }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  const int64_t n = end - begin;
  const int threads = num_threads();
  int64_t chunks = std::min<int64_t>(
      threads, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1 || t_inside_parallel) {
    fn(begin, end);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  chunks = (n + step - 1) / step;
  pool().run(static_cast<int>(chunks), [&](int c) {
    const int64_t lo = begin + c * step;
    const int64_t hi = std::min(end, lo + step);
    if (lo >= hi) return;
    const bool was_inside = t_inside_parallel;
    t_inside_parallel = true;
    try {
      fn(lo, hi);
    } catch (...) {
      t_inside_parallel = was_inside;
      throw;
    }
    t_inside_parallel = was_inside;
  });
}

}  // namespace spruce
