"""Training speed of the quickstart model alone and next to one CPU-bound process (thread oversubscription check).

Builds a small synthetic world, then runs `dermvqa train configs/tiny_cpu.yaml` (the quickstart's model,
batch and sequence length; stage 0 off) for --steps optimizer steps in a fresh process, once alone and once
while `python -c "while True: pass"` runs; prints the seconds per step of each (the Trainer's own
train_runtime, so start-up and model building are not counted) and the ratio. The machine's 1-minute load
average before each run is printed too: on a shared machine other jobs change both numbers.
Usage: python -m dermvqa.bench.threads [--steps 20] [--images 200] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path



def make_world(work: Path, images: int) -> Path:
    from data_gen.synth import synthesize
    from data_gen.synthetic_world import build_world

    world = work / "world"
    csv_path = build_world(world, n_images=images, seed=0, progress=False)
    synthesize(csv_path, world / "ontology.json", world, images_dir=world / "images", seed=0,
               families=["diagnosis", "yes_no", "multiple_choice", "morphology"], overwrite=True)
    return world


def seconds_per_step(world: Path, out: Path, steps: int) -> float:
    """Run the training CLI in a fresh process (so import-time thread settings apply) and read its runtime."""
    args = [f"--data.qa_dir={world / 'qa'}", f"--data.image_root={world / 'images'}", f"--train.output_dir={out}",
            f"--train.max_steps={steps}", "--tune.tower_pretrain={steps: 0}", "--train.report_to=[]",
            "--train.save_steps=100000", "--train.logging_steps=1000"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-m", "dermvqa.cli", "train", "tiny_cpu", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log = json.loads((out / "train_log.json").read_text())
    return next(e["train_runtime"] for e in log if "train_runtime" in e) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_threads_"))
    world = make_world(work, a.images)
    print(f"load average before the alone run: {os.getloadavg()[0]:.2f}", flush=True)
    alone = seconds_per_step(world, work / "alone", a.steps)
    print(f"alone:          {alone:.3f} s/step", flush=True)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print(f"load average before the competing run: {os.getloadavg()[0]:.2f}", flush=True)
        busy = seconds_per_step(world, work / "busy", a.steps)
    finally:
        hog.kill()
        hog.wait()
    print(f"with one competing process: {busy:.3f} s/step")
    print(f"slowdown: {busy / alone:.2f}x  ({os.cpu_count()} CPUs, work folder {work})")


if __name__ == "__main__":
    main()
