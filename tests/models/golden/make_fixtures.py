#!/usr/bin/python3
"""Writes the PyTorch fixtures that tests/models/test_golden.cpp compares spruce with.

Run once, from anywhere, with Debian's python3-torch (/usr/bin/python3); the test reads
only the .npz files this writes beside it and never runs PyTorch itself:

    /usr/bin/python3 tests/models/golden/make_fixtures.py

Two small networks, each a block of a built-in model followed by global average
pooling and a linear classifier, named as spruce names them (nn.Sequential indices):

  resnet_block.npz     0: BasicBlock(8 -> 16, stride 2, option-B shortcut), 1: pool, 2: Linear(16, 3)
                       SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4
  mobilenet_block.npz  0: depthwise-separable block (8 -> 16, stride 1), 1: pool, 2: Linear(16, 3)
                       SGD lr 0.05, momentum 0.9, dampening 0.1, weight decay 1e-3

Each file holds the initial state_dict ("init/<key>"), the input "x" [4, 8, 8, 8] and its
labels, then, for three training steps (training mode: batch statistics), the logits
and loss of each forward ("step<i>/logits", "step<i>/loss"), every parameter's gradient at
the first step ("grad/<name>") and the whole state_dict after the third optimizer step
("final/<key>", running statistics and batch counts included).
"""
import os

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False)
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv2 = nn.Conv2d(inp, out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class GlobalAvgPool(nn.Module):  # spruce's GlobalAvgPool2d: [N, C, H, W] -> [N, C]
    def forward(self, x):
        return x.mean(dim=(2, 3))


def randomise_batch_norms(net, gen):
    # Non-trivial affine parameters, so their gradients and updates are tested too.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def fixture(path, block, sgd):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(block, GlobalAvgPool(), nn.Linear(16, 3))
    randomise_batch_norms(net, gen)
    net.train()
    x = torch.randn(4, 8, 8, 8, generator=gen)
    labels = torch.tensor([0, 2, 1, 2])
    out = {"x": x, "labels": labels.float()}
    out.update({"init/" + k: v.clone() for k, v in net.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), **sgd)
    for step in range(3):
        opt.zero_grad()
        logits = net(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        out[f"step{step}/logits"] = logits.detach().clone()
        out[f"step{step}/loss"] = loss.detach().clone()
        if step == 0:
            out.update({"grad/" + n: p.grad.clone() for n, p in net.named_parameters()})
        opt.step()
    out.update({"final/" + k: v.clone() for k, v in net.state_dict().items()})
    np.savez_compressed(path, **{k: v.detach().numpy().astype(np.float32) for k, v in out.items()})
    print(f"wrote {path}: {len(out)} arrays, {os.path.getsize(path)} bytes")


here = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)
fixture(os.path.join(here, "resnet_block.npz"), BasicBlock(8, 16, 2),
        dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
fixture(os.path.join(here, "mobilenet_block.npz"), DepthwiseSeparable(8, 16, 1),
        dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3))
