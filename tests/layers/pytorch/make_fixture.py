#!/usr/bin/python3
"""Writes the PyTorch state_dict fixtures read by tests/layers/test_pytorch_state_dict.cpp.

Run from this folder with Debian's python3-torch and python3-numpy:
    /usr/bin/python3 make_fixture.py
It trains a small CNN a few steps (so batch-norm statistics are not the
defaults), prunes two weights with torch.nn.utils.prune, and saves the
state_dict the way PyTorch users do, np.savez(path, **{k: v.numpy()}), with
PyTorch's own dtypes: float32 weights, int64 num_batches_tracked. To cover
what other checkpoints contain, one weight is stored as float64, one
num_batches_tracked is left out (older PyTorch checkpoints), the conv mask is
bool and the linear mask uint8. reference.npz holds an input batch and the
eval-mode logits PyTorch computes for it. The C++ test only reads these files.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

torch.manual_seed(0)
# The same layers, in the same order, as the spruce Sequential the test builds:
# child names "0".."8" match, so the state_dict keys match.
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for _ in range(6):
    x = torch.randn(16, 3, 8, 8)
    y = torch.randint(0, 5, (16,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

prune.l1_unstructured(model[3], "weight", amount=0.5)
prune.l1_unstructured(model[8], "weight", amount=0.3)
masks = {"3.weight_mask": model[3].weight_mask.bool(), "8.weight_mask": model[8].weight_mask.to(torch.uint8)}
prune.remove(model[3], "weight")  # weight = weight_orig * mask, under the plain name
prune.remove(model[8], "weight")
model.eval()

sd = {k: v.numpy() for k, v in model.state_dict().items()}
sd.update({k: v.numpy() for k, v in masks.items()})
sd["0.weight"] = sd["0.weight"].astype(np.float64)
del sd["4.num_batches_tracked"]
assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"] == 6
np.savez("state_dict.npz", **sd)

x = torch.randn(4, 3, 8, 8)
with torch.no_grad():
    logits = model(x)
np.savez("reference.npz", input=x.numpy(), logits=logits.numpy())
print("wrote state_dict.npz (%d entries) and reference.npz" % len(sd))
