"""Time SpeedNetSmall's training steps by batch size and memory layout (random data, 5 steps
after 2 of warm-up). Run twice on 2026-11-28: first with LAYOUTS = (True, False) and
BATCHES = (512, 256), then with LAYOUTS = (True,) and BATCHES = (384, 256, 192, 128).

    .venv/bin/python benchmarks/2026-11-28-cpu-lookahead/probe_batch.py
"""

import time

import torch
from torch import nn

from cifar_course.models import SpeedNetSmall

LAYOUTS = (True, False)  # channels_last or not
BATCHES = (512, 256)

torch.manual_seed(0)
for channels_last in LAYOUTS:
    for batch in BATCHES:
        model = SpeedNetSmall()
        x = torch.randn(batch, 3, 32, 32)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
        for i in range(7):
            if i == 2:
                began = time.perf_counter()
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = (time.perf_counter() - began) / 5
        print(
            f"channels_last={channels_last} batch={batch}: {seconds:.3f} s/step, "
            f"{seconds * 50000 / batch:.1f} s/epoch",
            flush=True,
        )
