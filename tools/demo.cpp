// spruce-demo: shows the engine learning. A two-layer perceptron fits a
// seeded synthetic classification batch with plain SGD; the loss falls.
#include <cstdio>
#include <string>
#include <vector>

#include "core/ops/elementwise.h"
#include "core/ops/loss.h"
#include "core/ops/matmul.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tools/common/args.h"

using namespace spruce;

namespace {
int demo(int argc, char** argv) {
  // No flags of its own: --help and --version only, anything else is refused.
  cli::Args args("spruce-demo",
                 "Trains a two-layer perceptron on a seeded synthetic batch with plain SGD and\n"
                 "prints the falling loss: a quick check that the engine learns.");
  if (!args.parse(argc, argv)) return 0;
  set_num_threads(default_num_threads());
  Generator g(0);
  const int64_t n = 256, features = 32, hidden = 64, classes = 4;
  // Labels come from a random linear teacher, so the task is learnable.
  Tensor x = Tensor::randn({n, features}, g);
  Tensor teacher = Tensor::randn({classes, features}, g);
  Tensor scores = ops::linear(x, teacher);
  std::vector<int32_t> y(n);
  for (int64_t i = 0; i < n; ++i) {
    int32_t best = 0;
    for (int32_t c = 1; c < classes; ++c)
      if (scores.data()[i * classes + c] > scores.data()[i * classes + best]) best = c;
    y[i] = best;
  }
  Tensor w1 = Tensor::randn({hidden, features}, g, 0.f, 0.2f).set_requires_grad(true);
  Tensor b1 = Tensor::zeros({hidden}).set_requires_grad(true);
  Tensor w2 = Tensor::randn({classes, hidden}, g, 0.f, 0.2f).set_requires_grad(true);
  std::printf("spruce demo: MLP %lld-%lld-%lld on %lld synthetic samples, SGD lr 0.5\n",
              static_cast<long long>(features), static_cast<long long>(hidden),
              static_cast<long long>(classes), static_cast<long long>(n));
  for (int step = 0; step <= 200; ++step) {
    Tensor logits = ops::linear(ops::relu(ops::linear(x, w1, b1)), w2);
    Tensor loss = ops::cross_entropy(logits, y);
    if (step % 25 == 0)
      std::printf(
          "step %3d  loss %.4f  accuracy %5.1f%%\n", step, loss.item(),
          100.0 * static_cast<double>(ops::count_correct(logits, y)) / static_cast<double>(n));
    for (Tensor* p : {&w1, &b1, &w2}) p->zero_grad();
    loss.backward();
    for (Tensor* p : {&w1, &b1, &w2})
      for (int64_t i = 0; i < p->numel(); ++i) p->data()[i] -= 0.5f * p->grad().data()[i];
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  return cli::run_tool("spruce-demo", [&] { return demo(argc, argv); });
}
