"""Helpers for the training tests: a handful of synthetic-world records and tiny recipes (not a test file)."""
import os
import subprocess
import sys
from pathlib import Path

from data_gen.records import QARecord, write_parquet
from data_gen.synthetic_world import CONDITIONS, render
from dermvqa.train.recipe import load_recipe
from tests.conftest import REPO

TINY_MODEL = ("model.tiny={image_size: 32, patch_size: 8, vision_width: 32, vision_layers: 1, text_width: 32, "
              "text_layers: 2, vocab_size: 300, feature_layer: -1}")
LORA = "tune.lora={r: 8, alpha: 16, dropout: 0.05, targets: all-linear}"
CLI = "import sys; from dermvqa.cli import app; sys.exit(app())"


def make_world(folder: Path, n: int = 12) -> Path:
    """n images of two conditions, each with an open diagnosis and a yes/no record."""
    (folder / "images").mkdir(parents=True)
    recs = []
    for i in range(n):
        c = CONDITIONS[i % 2]
        render(c, 3, 32, seed=i).save(folder / "images" / f"{i}.png")
        base = dict(image=f"{i}.png", split="train", ontology_path=list(c.path))
        recs.append(QARecord(id=f"{i}-dx", question="What is the most likely diagnosis?", answer=c.label,
                             family="diagnosis", answer_type="open", label=c.label, **base))
        recs.append(QARecord(id=f"{i}-yn", question=f"Is this {c.label}?", answer="yes", family="yes_no",
                             answer_type="closed", options=["yes", "no"], answer_index=0, label="yes", **base))
    write_parquet(recs, folder / "qa" / "part.parquet")
    return folder


def overrides(world: Path, out: Path, epochs: int = 2, extra=()) -> list[str]:
    return [f"data.qa_dir={world / 'qa'}", f"data.image_root={world / 'images'}", f"train.output_dir={out}",
            TINY_MODEL, "tune.tower_pretrain={steps: 0}", "data.max_length=64",
            f"train.curriculum=[{{families: all, epochs: {epochs}}}]", "train.batch_size=4",
            "train.logging_steps=1", "train.report_to=[]", "train.save_steps=1000", *extra]


def recipe(world: Path, out: Path, epochs: int = 2, extra=()) -> dict:
    return load_recipe(REPO / "configs" / "tiny_cpu.yaml", overrides(world, out, epochs, extra))


def child_env() -> dict:
    """Environment for a training child process: one CPU thread, no GPU, no inherited DeepSpeed rendezvous."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT",
                                                             "MASTER_ADDR")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    return env


def cli(args: list[str], **kwargs) -> subprocess.Popen:
    """`dermvqa ...` in a child process with `child_env()`."""
    return subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=REPO, env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def losses(log: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log if "loss" in e}
