"""Time one training step (forward, backward, Nesterov SGD) at batch 512, channels_last, on
random images, in fp32 and under bf16 autocast, for the candidate networks of the CPU speed-run;
3 warm-up steps, 5 timed. Run from the repository root:
.venv/bin/python benchmarks/2026-11-28-intel-amx/step_time.py"""

import platform
import time

import torch
from torch import nn

from cifar_course.device import keep_freed_memory
from cifar_course.models import ModernNet, SpeedNet, SpeedNetSmall

keep_freed_memory()
torch.manual_seed(0)
print(
    f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
    f"capability {torch.backends.cpu.get_cpu_capability()}, "
    f"mkldnn bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, "
    f"threads {torch.get_num_threads()}",
    flush=True,
)


class Mid(SpeedNet):
    widths = (48, 192, 192)


for cls in [SpeedNetSmall, Mid, SpeedNet, ModernNet]:
    for bf16 in (False, True):
        m = cls().to(memory_format=torch.channels_last)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
        x = torch.rand(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (512,))
        for i in range(8):
            if i == 3:
                t = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = (time.perf_counter() - t) / 5
        name = "bf16" if bf16 else "fp32"
        print(f"{cls.__name__} {name}: {dt * 1000:.0f} ms/step, {dt * 98:.1f} s/epoch", flush=True)
