"""The time of one pass over 10,000 test images by a freshly built SpeedNet and SpeedNetSmall in
eval mode, in fp32 (False) and under bf16 autocast (True): the mean of 3 forward passes of a
batch of 1,000 random images (channels_last) after one warm-up, times 10. Output:
time_test_pass.log (2026-12-04, before the five runs, on this machine alone). Run from the
repository root."""

import time

import torch

from cifar_course.device import keep_freed_memory
from cifar_course.models import SpeedNet, SpeedNetSmall

keep_freed_memory()
x = torch.rand(1000, 3, 32, 32).contiguous(memory_format=torch.channels_last)
for cls in (SpeedNet, SpeedNetSmall):
    m = cls().to(memory_format=torch.channels_last).eval()
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            m(x)
            t = time.perf_counter()
            for _ in range(3):
                m(x)
            dt = (time.perf_counter() - t) / 3
        print(cls.__name__, bf16, f"{dt * 1000:.0f} ms/1000 -> {dt * 10:.1f} s per test pass")
