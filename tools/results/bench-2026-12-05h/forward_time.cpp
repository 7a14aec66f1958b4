// The eval forward of a checkpoint's model on a random batch, as the tools run it without
// InferenceThreads: median ms of ITERS calls after 3 untimed ones. Built against a build of spruce:
//   g++ -std=c++20 -O2 -I. -Ibuild forward_time.cpp -o forward_time \
//     build/tools/libspruce_tools_common.a build/libspruce.a -lopenblas -lz -lyaml-cpp -lpthread \
//     $(pkg-config --libs ompi)
//   forward_time CKPT BATCH THREADS ITERS
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tools/common/model_io.h"
using namespace spruce;
int main(int argc, char** argv) {
  const int64_t batch = std::atoll(argv[2]);
  set_num_threads(std::atoi(argv[3]));
  const int iters = std::atoi(argv[4]);
  cli::ModelSpec spec;
  cli::LoadedModel m = cli::load_model(argv[1], spec);
  m.module->eval();
  NoGradGuard ng;
  Generator g(1);
  Tensor x = Tensor::randn({batch, 1, 28, 28}, g);
  for (int i = 0; i < 3; ++i) (*m.module)(x);
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    (*m.module)(x);
    t.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  std::printf("%.3f ms median, %.0f img/s\n", t[t.size() / 2], batch * 1000.0 / t[t.size() / 2]);
}
