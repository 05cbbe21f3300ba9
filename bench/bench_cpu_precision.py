"""bf16 autocast against float32 for a CPU training step, in one process, interleaved.

    .venv/bin/python bench/bench_cpu_precision.py [--rounds 4] [--steps 20] [--batch 128]

A step is what the engine's step does (engine/training/epoch.py): forward under torch.autocast (bf16) or
without it (float32), cross-entropy, backward, AdamW; channels-last, 28x28x1 inputs as Fashion-MNIST's.
Prints the median step time of each precision over the rounds and the ratio bf16 / float32. On a CPU
without native bfloat16 (neither AVX512-BF16 nor AMX) bf16 is emulated: the engine refuses it there,
and this script says so and stops.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_whole_run import MODELS as WHOLE_RUN_MODELS  # noqa: E402  (the whole-run bench's two custom models)

from engine.config import parse_config  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.training.run import cpu_bf16_supported, thread_count  # noqa: E402

MODELS = {"small CNN (width 16)": WHOLE_RUN_MODELS["small_cnn"], "small ResNet (16-32-64)": WHOLE_RUN_MODELS["resnet"]}


def step_ms(model_cfg: dict, bf16: bool, steps: int, batch: int) -> float:
    cfg = parse_config({"data": {"dataset": "digits"}, "model": model_cfg})
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, 10).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    if not cpu_bf16_supported():
        raise SystemExit("this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated (the engine refuses it)")
    torch.set_num_threads(thread_count(None))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, load {os.getloadavg()[0]:.1f}"
    )
    print("| model | float32 step | bf16 step | bf16 ÷ float32 |")
    print("|---|---|---|---|")
    for label, model_cfg in MODELS.items():
        times = {False: [], True: []}
        for r in range(a.rounds):
            for bf16 in (False, True) if r % 2 == 0 else (True, False):
                times[bf16].append(step_ms(model_cfg, bf16, a.steps, a.batch))
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {label} | {fp32:.1f} ms | {bf16:.1f} ms | **{bf16 / fp32:.2f}×** |", flush=True)
    print(f"(median over {a.rounds} interleaved rounds of {a.steps} steps)")


if __name__ == "__main__":
    main()
