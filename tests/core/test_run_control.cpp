// The pieces long runs use to survive their user (core/io/run_lock.h,
// core/io/snapshots.h, core/stop_request.h): one live process per run
// folder, a dead holder never blocks; epoch snapshots made atomically and
// rotated only after the new one is in place; the first SIGINT/SIGTERM only
// raises a flag, the second ends the process at once and removes the
// temporaries of the files being written.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "core/io/file.h"
#include "core/io/run_lock.h"
#include "core/io/snapshots.h"
#include "core/stop_request.h"
#include "tests/test_util.h"

using namespace spruce;
using namespace spruce::test;

namespace {

/// Forks a child that runs `body` then _exits with its result; returns the wait status.
template <class Fn>
int in_child(Fn body) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(body());
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

}  // namespace

TEST_CASE("RunLock: a live holder is refused by PID, a released or dead one is not") {
  TempDir dir;
  {
    io::RunLock lock(dir.path().string(), "spruce-train");
    CHECK(lock.held());
    CHECK(read_text(lock.path()) == std::to_string(::getpid()) + " spruce-train\n");
    // Another open file description conflicts, in this process as in another.
    std::string message;
    try {
      io::RunLock second(dir.path().string(), "spruce-train");
    } catch (const io::RunLockedError& e) {
      message = e.what();
    }
    CHECK(message == dir.path().string() + " is in use by spruce-train (PID " +
                         std::to_string(::getpid()) + ", holding " + lock.path() +
                         "); wait for it to finish or stop it, or choose another --out");
    const int status = in_child([&] {
      try {
        io::RunLock other(dir.path().string(), "child");
        return 0;
      } catch (const io::RunLockedError&) {
        return 3;
      }
    });
    CHECK(WEXITSTATUS(status) == 3);
  }
  // Released: the file is gone and the next one takes the lock.
  CHECK(dir.count() == 0);
  { io::RunLock again(dir.path().string(), "spruce-train"); }
  // A holder that dies (SIGKILL: no destructor, the file stays) blocks nobody.
  const int status = in_child([&] {
    new io::RunLock(dir.path().string(), "doomed");  // never released
    ::raise(SIGKILL);
    return 0;
  });
  CHECK(WIFSIGNALED(status));
  CHECK(fs::exists(dir.file(io::RunLock::kFileName)));
  io::RunLock after(dir.path().string(), "spruce-train");
  CHECK(read_text(after.path()) == std::to_string(::getpid()) + " spruce-train\n");
  CHECK_THROWS_AS(io::RunLock(dir.file("missing"), "x"), IoError);
}

TEST_CASE("snapshots: epoch-K.ckpt of the checkpoint, the last N kept, later epochs untouched") {
  TempDir dir;
  const std::string last = dir.file("last.ckpt");
  write_bytes(dir.file("epoch-9.ckpt"), {9});  // from another run in this folder
  for (int64_t epoch = 1; epoch <= 5; ++epoch) {
    write_bytes(dir.file("next"), {static_cast<uint8_t>(epoch)});
    fs::rename(dir.file("next"), last);  // as AtomicFile replaces last.ckpt
    io::save_snapshot(last, epoch, 2);
  }
  CHECK(io::list_snapshots(dir.path().string()) == std::vector<int64_t>{4, 5, 9});
  CHECK(read_bytes(dir.file("epoch-4.ckpt")) == std::vector<uint8_t>{4});
  CHECK(read_bytes(dir.file("epoch-5.ckpt")) == std::vector<uint8_t>{5});
  CHECK(read_bytes(last) == std::vector<uint8_t>{5});
  // Saving an epoch again replaces its snapshot.
  write_bytes(dir.file("next"), {55});
  fs::rename(dir.file("next"), last);
  io::save_snapshot(last, 5, 2);
  CHECK(read_bytes(dir.file("epoch-5.ckpt")) == std::vector<uint8_t>{55});
  CHECK(dir.count() == 4);  // last.ckpt, epoch-4, -5, -9: no temporary
  // A missing checkpoint is an error naming it; nothing is removed.
  CHECK_THROWS_AS(io::save_snapshot(dir.file("gone.ckpt"), 6, 1), IoError);
  CHECK(io::list_snapshots(dir.path().string()) == std::vector<int64_t>{4, 5, 9});
}

TEST_CASE("StopOnSignal: the first signal is a flag, the second ends the process at once") {
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    TempDir dir;
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      StopOnSignal stop("");
      io::AtomicFile half(dir.file("out.bin"));  // being written when the signals come
      half.write("partial");
      ::raise(sig);
      // The first one only sets the flag: still alive, and it says which.
      if (StopOnSignal::requested() != sig || StopOnSignal::exit_status() != 128 + sig) ::_exit(1);
      const char ready = 'r';
      if (::write(pipe_fds[1], &ready, 1) != 1) ::_exit(2);
      ::raise(sig);  // the second: dies by it, the temporary removed
      ::_exit(3);
    }
    ::close(pipe_fds[1]);
    char got = 0;
    CHECK(::read(pipe_fds[0], &got, 1) == 1);
    ::close(pipe_fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(got == 'r');
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == sig);
    CHECK(dir.count() == 0);  // neither out.bin nor its temporary
  }
  // In this process: the handlers are restored when the StopOnSignal ends.
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);
  {
    StopOnSignal stop("");
    CHECK(StopOnSignal::requested() == 0);
    ::raise(SIGTERM);
    CHECK(StopOnSignal::requested() == SIGTERM);
    CHECK(std::string(StopOnSignal::signal_name()) == "SIGTERM");
  }
  struct sigaction now {};
  sigaction(SIGINT, nullptr, &now);
  CHECK((now.sa_handler == before.sa_handler));
}
