// spruce -> PyTorch: the fixture model loaded in spruce, saved with
// save_npz(MaskExport::kFold), loads strictly into the plain PyTorch model of
// pytorch/make_fixture.py and gives spruce's logits there. Needs
// /usr/bin/python3 with torch and numpy; reported as skipped without them.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>

#include "core/autograd.h"
#include "core/io/npz.h"
#include "layers/state_dict_npz.h"
#include "tests/layers/pytorch_fixture.h"
#include "tests/skip.h"
#include "tests/test_util.h"

using namespace spruce;
using spruce::test::pytorch_fixture;
using spruce::test::TempDir;

namespace {
bool have_torch() {
  return std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}
}  // namespace

TEST_CASE("a spruce state dict loads into PyTorch and gives the same logits" *
          doctest::skip(spruce::test::skip_unless(
              have_torch(), "/usr/bin/python3 cannot import torch and numpy"))) {
  TempDir dir;
  auto model = spruce::test::pytorch_fixture_model();
  load_npz(*model, pytorch_fixture("state_dict.npz"));
  model->eval();
  const NamedTensors ref = io::read_npz(pytorch_fixture("reference.npz"));
  Tensor x = ref[0].second;
  REQUIRE(ref[0].first == "input");
  NoGradGuard no_grad;
  io::write_npz(dir.file("io.npz"), {{"input", x}, {"logits", model->forward(x)}});
  save_npz(*model, dir.file("state.npz"), MaskExport::kFold);

  std::ofstream(dir.file("check.py")) << R"(
import sys, numpy as np, torch, torch.nn as nn
d = sys.argv[1]
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
z = np.load(d + '/state.npz')
model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})  # strict
assert model[1].num_batches_tracked.dtype == torch.int64 and int(model[1].num_batches_tracked) == 6
assert float((model[3].weight == 0).float().mean()) == 0.5
io = np.load(d + '/io.npz')
model.eval()
with torch.no_grad():
    logits = model(torch.from_numpy(io['input'])).numpy()
diff = float(np.abs(logits - io['logits']).max())
print('largest |PyTorch - spruce| logit difference:', diff)
assert diff < 1e-5, diff
)";
  const std::string cmd = "/usr/bin/python3 '" + dir.file("check.py") + "' '" +
                          dir.path().string() + "' >'" + dir.file("py.log") + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  MESSAGE(spruce::test::read_text(dir.file("py.log")));
  CHECK(rc == 0);
}
