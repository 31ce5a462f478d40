"""Time SpeedNetSmall's training steps at batch 512 with the whitening layer's bias trained and
frozen (requires_grad False), alternating, 3 times each (12 steps after 2 of warm-up).

    .venv/bin/python benchmarks/2026-11-28-cpu-lookahead/probe_freeze.py
"""

import time

import torch
from torch import nn

from cifar_course.models import SpeedNetSmall

torch.manual_seed(0)
batch = 512
for frozen in (False, True) * 3:
    model = SpeedNetSmall().to(memory_format=torch.channels_last)
    model.whiten.bias.requires_grad_(not frozen)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.01, momentum=0.85, nesterov=True)
    x = torch.rand(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    for i in range(14):
        if i == 2:
            began = time.perf_counter()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - began) / 12
    print(
        f"whiten bias frozen={frozen}: {seconds:.3f} s/step, {seconds * 50000 / batch:.1f} s/epoch",
        flush=True,
    )
