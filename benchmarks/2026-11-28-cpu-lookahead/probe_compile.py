"""Time SpeedNetSmall's training steps at batch 512, eager and under torch.compile (5 steps after
3 of warm-up, which for the compiled model includes compiling).

    .venv/bin/python benchmarks/2026-11-28-cpu-lookahead/probe_compile.py
"""

import time

import torch
from torch import nn

from cifar_course.models import SpeedNetSmall

torch.manual_seed(0)
batch = 512
for compiled in (False, True):
    model = SpeedNetSmall().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    run = torch.compile(model) if compiled else model
    started = time.perf_counter()
    for i in range(8):
        if i == 3:
            began = time.perf_counter()
            print(f"compile={compiled} warm-up {began - started:.1f} s", flush=True)
        loss = loss_fn(run(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - began) / 5
    print(
        f"compile={compiled} batch={batch}: {seconds:.3f} s/step, "
        f"{seconds * 50000 / batch:.1f} s/epoch",
        flush=True,
    )
