"""Time one training step (forward, backward, Nesterov SGD) at batch 512, fp32, channels_last,
on random images, for the candidate networks of the CPU speed-run; 3 warm-up steps, 5 timed.
Run from the repository root: .venv/bin/python benchmarks/2026-11-27-cpu-speedrun/step_time.py"""

import time

import torch
from torch import nn

from cifar_course.device import keep_freed_memory
from cifar_course.models import ModernNet, SpeedNet, SpeedNetSmall

keep_freed_memory()
torch.manual_seed(0)


class Mid(SpeedNet):
    widths = (48, 192, 192)


class Narrow(SpeedNet):
    widths = (32, 96, 96)


for cls in [ModernNet, SpeedNetSmall, Mid, SpeedNet, Narrow]:
    m = cls().to(memory_format=torch.channels_last)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (512,))
    for i in range(8):
        if i == 3:
            t = time.perf_counter()
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t) / 5
    print(cls.__name__, f"{dt * 1000:.0f} ms/step, {dt * 98:.1f} s/epoch", flush=True)
