"""`dermvqa quickstart`: the whole path on the embedded synthetic lesion world, on a CPU, in minutes.

world (images + Derm1M-format CSV) -> ontology-grounded QA -> tiny LLaVA trained from scratch ->
greedy evaluation on held-out images (+ blind control) -> a few example answers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "configs" / "tiny_cpu.yaml"


def quickstart(out: Path = typer.Option(Path("runs/quickstart"), help="output folder"),
               images: int = typer.Option(1600, help="number of synthetic lesion images"),
               seed: int = typer.Option(0, help="seed for the world, the QA and training"),
               recipe: Path = typer.Option(DEFAULT_RECIPE, help="training recipe YAML"),
               ontology: Path = typer.Option(None, help="ontology.json (default: the world's Derm1M subset)"),
               families: str = typer.Option("diagnosis,yes_no,multiple_choice,morphology",
                                            help="QA families to synthesize, comma-separated")):
    """Build the synthetic world, synthesize QA, train a tiny LLaVA, evaluate it and show answers."""
    from data_gen.records import read_records
    from data_gen.synth import synthesize
    from data_gen.synthetic_world import build_world
    from dermvqa.eval import run_eval
    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training
    from PIL import Image

    t0 = time.time()
    world = out / "world"
    csv_path = build_world(world, n_images=images, seed=seed)
    report = synthesize(csv_path, ontology or world / "ontology.json", world, images_dir=world / "images", seed=seed,
                        families=families.split(","), overwrite=True)
    typer.echo(f"QA records per family: {json.dumps(report['families'])}, per split: {json.dumps(report['splits'])}")
    t1 = time.time()
    rec = load_recipe(recipe, [f"data.qa_dir={world / 'qa'}", f"data.image_root={world / 'images'}",
                               f"train.output_dir={out / 'train'}", f"train.seed={seed}"])
    model_dir = run_training(rec)
    t2 = time.time()
    metrics = run_eval(model_dir, f"qa:{world}:test", out / "eval", batch_size=64, blind=True)
    t3 = time.time()

    model, processor = load_model(model_dir, device="cpu")
    test = read_records(world / "qa", split="test")
    picks = [next(r for r in test if r["family"] == f) for f in dict.fromkeys(r["family"] for r in test)]
    answers = answer_batch(model, processor, [Image.open(world / "images" / r["image"]) for r in picks],
                           [r["question"] for r in picks])
    typer.echo("\nExample answers on held-out images:")
    for r, a in zip(picks, answers):
        typer.echo(f"  [{r['image']}] Q: {r['question']}\n      model: {a}\n      gold:  {r['answer']}")
    headline = {k: metrics[k] for k in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy") if k in metrics}
    typer.echo(f"\nHeld-out metrics: {json.dumps(headline)}  (full report: {out / 'eval'})")
    typer.echo(f"Time: data {t1 - t0:.0f}s, training {t2 - t1:.0f}s, evaluation {t3 - t2:.0f}s, "
               f"total {time.time() - t0:.0f}s. Model: {model_dir}")
    typer.echo(f"Ask it yourself: dermvqa chat --model {model_dir} --image {world / 'images' / picks[0]['image']} "
               f"--question \"What is the most likely diagnosis?\"")
