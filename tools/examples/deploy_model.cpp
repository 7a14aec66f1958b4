// Example: use an installed spruce as a library (built in CI against the
// installed package with `pkg-config --cflags --libs spruce` only).
//
// Builds ResNet-20 from the model registry, optionally loads its weights from
// a PyTorch-style state_dict .npz, and prints the eval-mode logits of a seeded
// random batch.
//
// usage: deploy_model [STATE_DICT.npz]
#include <spruce/core/autograd.h>
#include <spruce/core/io/npz.h>
#include <spruce/core/random.h>
#include <spruce/core/version.h>
#include <spruce/models/registry.h>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  try {
    spruce::models::ModelConfig config;  // 3 input channels, 10 classes, shortcut B
    auto model = spruce::models::build_model("resnet20", config);
    if (argc > 1) model->load_state_dict(spruce::io::read_npz(argv[1]));
    model->eval();

    spruce::Generator gen(0);
    const spruce::Tensor x = spruce::Tensor::randn({2, 3, 32, 32}, gen);
    spruce::NoGradGuard no_grad;
    const spruce::Tensor logits = model->forward(x);  // [2, 10]
    std::printf("spruce %s: resnet20, %lld parameters, logits of sample 0:", SPRUCE_VERSION,
                static_cast<long long>(model->num_parameters()));
    for (int64_t c = 0; c < 10; ++c) std::printf(" %.4f", logits.data()[c]);
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deploy_model: error: %s\n", e.what());
    return 1;
  }
}
