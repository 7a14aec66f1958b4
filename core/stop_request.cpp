// StopOnSignal: a flag on the first SIGINT/SIGTERM, an immediate exit on the second.
#include "stop_request.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "communicator.h"
#include "io/file.h"

namespace spruce {
namespace {

std::atomic<int> g_requested{0};
char g_notice[512];
size_t g_notice_size = 0;
struct sigaction g_previous_int, g_previous_term;

void on_signal(int sig) {
  int expected = 0;
  if (g_requested.compare_exchange_strong(expected, sig)) {
    if (g_notice_size > 0) {
      const ssize_t ignored = ::write(STDERR_FILENO, g_notice, g_notice_size);
      (void)ignored;
    }
    return;
  }
  // The second signal: abandon the files being written and die by it.
  io::remove_temporaries_now();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

StopOnSignal::StopOnSignal(const std::string& notice) {
  g_requested = 0;
  const std::string line = notice.empty() ? std::string() : notice + "\n";
  g_notice_size = std::min(line.size(), sizeof g_notice);
  std::memcpy(g_notice, line.data(), g_notice_size);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking reads and writes carry on
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
}

int StopOnSignal::requested() { return g_requested.load(); }

int StopOnSignal::exit_status() { return 128 + requested(); }

const char* StopOnSignal::signal_name() {
  return requested() == SIGTERM ? "SIGTERM" : requested() == SIGINT ? "SIGINT" : "none";
}

bool StopOnSignal::requested_on_any(Communicator& comm) {
  if (comm.size() <= 1) return requested() != 0;
  double sig = requested();
  comm.allreduce_max(std::span<double>(&sig, 1));
  if (sig != 0 && requested() == 0) g_requested = static_cast<int>(sig);
  return sig != 0;
}

void StopOnSignal::simulate(int signal) { g_requested = signal; }

}  // namespace spruce
