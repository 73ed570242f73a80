"""Timing harness of the GPU benchmark cases: device sync, a timed step loop with a deadline, and the
one-step kernel profile (torch.profiler) printed for the last warmup step."""
from __future__ import annotations

import time

import torch


def to_device(batch, device, dtype):
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class StepProfiler:
    """Profiles one step (start/stop around it) and prints the kernels with the most self device time."""

    def __init__(self, name, device, enabled):
        self.name, self.device, self.enabled, self.prof = name, device, enabled, None

    def start(self):
        if self.enabled:
            kinds = [torch.profiler.ProfilerActivity.CPU]
            if self.device == "cuda":
                kinds.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=kinds)
            self.prof.__enter__()

    def stop(self, top=12):
        if self.prof is None:
            return
        sync(self.device)
        self.prof.__exit__(None, None, None)
        key = "self_device_time_total" if self.device == "cuda" else "self_cpu_time_total"
        events = [e for e in self.prof.key_averages() if getattr(e, key, 0) > 0]
        total = sum(getattr(e, key) for e in events) or 1
        print(f"profile of one '{self.name}' step: {total / 1e3:.1f} ms of {'device' if self.device == 'cuda' else 'cpu'}"
              f" time; top kernels (share, ms, calls):", flush=True)
        for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
            print(f"  {100 * getattr(e, key) / total:5.1f}% {getattr(e, key) / 1e3:9.1f}  {e.count:6d}  {e.key[:90]}")
        self.prof = None


def timed_loop(step, batches, collate, device, dtype, warmup, deadline, profiler):
    """Run warmup + measured steps (stopping at `deadline`); return (real tokens, seconds, steps)."""
    tokens, seconds, done = 0, 0.0, 0
    for i, examples in enumerate(batches):
        batch = collate(examples)
        n = sum(len(e["input_ids"]) for e in examples)  # real tokens, whatever the collator pads
        if i == warmup - 1:
            profiler.start()
        sync(device)
        t0 = time.perf_counter()
        step(to_device(batch, device, dtype))
        sync(device)
        if i == warmup - 1:
            profiler.stop()
        if i >= warmup:
            tokens, seconds, done = tokens + n, seconds + time.perf_counter() - t0, done + 1
        if time.perf_counter() > deadline and done:
            break
    return tokens, seconds, done
