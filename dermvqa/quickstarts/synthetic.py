"""The embedded synthetic lesion world: no download, eight Derm1M leaves on all six Fitzpatrick tones."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from dermvqa.quickstarts import Plugin, Prepared, echo_alert


def prepare(out: Path, data, seed: int, options: dict) -> Prepared:
    """Render the world (images + Derm1M-format CSV) and synthesize its QA."""
    from data_gen.synth import synthesize
    from data_gen.synthetic_world import build_world

    world = out / "world"
    csv_path = build_world(world, n_images=options["images"], seed=seed)
    report = synthesize(csv_path, options["ontology"] or world / "ontology.json", world, images_dir=world / "images",
                        seed=seed, families=options["families"], overwrite=True,
                        val_fraction=options["val_fraction"])
    typer.echo(f"QA records per family: {json.dumps(report['families'])}, per split: {json.dumps(report['splits'])}")
    return Prepared(world, world / "images", f"qa:{world}:test")


def example_answers(model, processor, model_dir: Path, prepared: Prepared, out: Path, metrics: dict,
                    alert: dict) -> dict:
    """One greedy answer per question family on held-out images, beside the gold answer."""
    from PIL import Image

    from data_gen.records import read_records
    from dermvqa.infer.generate import answer_batch

    test = read_records(prepared.qa_dir / "qa", split="test")
    picks = [next(r for r in test if r["family"] == f) for f in dict.fromkeys(r["family"] for r in test)]
    answers = answer_batch(model, processor, [Image.open(prepared.images / r["image"]) for r in picks],
                           [r["question"] for r in picks])
    return {"examples": [{"image": r["image"], "question": r["question"], "model": a, "gold": r["answer"]}
                         for r, a in zip(picks, answers)],
            "headline": {k: metrics[k] for k in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy")
                         if k in metrics},
            "ask": f"dermvqa chat --model {model_dir} --image {prepared.images / picks[0]['image']} "
                   f"--question \"What is the most likely diagnosis?\""}


def echo(report: dict, out: Path) -> None:
    typer.echo("\nExample answers on held-out images:")
    for e in report["examples"]:
        typer.echo(f"  [{e['image']}] Q: {e['question']}\n      model: {e['model']}\n      gold:  {e['gold']}")
    typer.echo(f"\nHeld-out metrics: {json.dumps(report['headline'])}  (full report: {out / 'eval'})")
    echo_alert(report["malignancy_alert"])
    typer.echo(f"Ask it yourself: {report['ask']}")


PLUGIN = Plugin("synthetic", "tiny_cpu", prepare, example_answers, echo)
