// Example: gradual WoodFisher pruning to 80 % inside your own training loop,
// with a model of your own built from spruce's layers, on a toy task (8x8
// images labelled by a fixed random teacher). Compiled and run by the test
// suite, and against the installed package (pkg-config spruce) in CI.
#include <spruce/core/ops/loss.h>
#include <spruce/core/random.h>
#include <spruce/layers/conv2d.h>
#include <spruce/layers/flatten.h>
#include <spruce/layers/linear.h>
#include <spruce/layers/relu.h>
#include <spruce/layers/sequential.h>
#include <spruce/optim/sgd.h>
#include <spruce/pruning/gradual_pruner.h>

#include <algorithm>
#include <cstdio>

using namespace spruce;
using Batch = std::pair<Tensor, std::vector<int32_t>>;  // images, labels

Batch make_batch(Generator& gen, const Tensor& teacher,
                 int64_t n) {  // label: argmax of teacher · image
  Batch b{Tensor::randn({n, 1, 8, 8}, gen), std::vector<int32_t>(n)};
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> score(4, 0.f);
    for (int64_t c = 0; c < 4; ++c)
      for (int64_t k = 0; k < 64; ++k)
        score[c] += teacher.data()[c * 64 + k] * b.first.data()[i * 64 + k];
    b.second[i] =
        static_cast<int32_t>(std::max_element(score.begin(), score.end()) - score.begin());
  }
  return b;
}

int main() {
  Generator gen(0);
  const Tensor teacher = Tensor::randn({4, 64}, gen);
  std::vector<Batch> train, fisher;
  for (int i = 0; i < 16; ++i) train.push_back(make_batch(gen, teacher, 32));
  for (int i = 0; i < 32; ++i)
    fisher.push_back(make_batch(gen, teacher, 1));  // Fisher: one sample per gradient
  const Batch test = make_batch(gen, teacher, 256);

  Sequential model;
  model.emplace_back<Conv2d>(1, 16, 3, ops::Conv2dOptions{.padding = 1});
  model.emplace_back<ReLU>();
  model.emplace_back<Conv2d>(16, 16, 3, ops::Conv2dOptions{.stride = 2, .padding = 1});
  model.emplace_back<ReLU>();
  model.emplace_back<Flatten>();
  model.emplace_back<Linear>(16 * 4 * 4, 4);

  pruning::GradualPruningOptions options;  // prune at epochs 0..3, cubic 20 % -> 80 %
  options.method = pruning::parse_method("woodfisher");
  options.schedule = {
      .start = 0, .end = 3, .frequency = 1, .initial_sparsity = 0.2, .final_sparsity = 0.8};
  options.fisher = {.damp = 1e-4, .block_size = 64, .samples = 32};
  pruning::GradualPruner pruner(model, {"*"}, options);  // masks every conv and linear weight
  optim::Sgd opt(model.named_parameters(), {.lr = 0.05, .momentum = 0.9});
  opt.set_masks(model.named_masks());  // pruned weights and their momentum stay exactly 0

  for (int64_t epoch = 0; epoch < 10; ++epoch) {
    if (pruner.is_step(epoch)) {
      size_t next = 0;
      pruner.prune(epoch, [&] { return fisher[next++ % fisher.size()]; });
      opt.apply_masks();
    }
    double loss_sum = 0;
    for (const auto& [images, labels] : train) {
      Tensor loss = ops::cross_entropy(model(images), labels);
      loss_sum += loss.item();
      model.zero_grad();
      loss.backward();
      opt.step();
    }
    std::printf("epoch %lld  sparsity %.1f %%  train loss %.4f\n", static_cast<long long>(epoch),
                100 * pruner.sparsity(), loss_sum / static_cast<double>(train.size()));
  }
  model.eval();
  const double top1 = static_cast<double>(ops::count_correct(model(test.first), test.second)) / 256;
  std::printf("test top-1 %.1f %% at %.1f %% sparsity\n", 100 * top1, 100 * pruner.sparsity());
  return pruner.sparsity() > 0.799 && top1 > 0.5
             ? 0
             : 1;  // the suite runs this: pruned, and still learned
}
