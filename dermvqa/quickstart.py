"""`dermvqa quickstart`: the whole path on the embedded synthetic lesion world, on a CPU, in minutes.

world (images + Derm1M-format CSV) -> ontology-grounded QA -> tiny LLaVA trained from scratch ->
greedy evaluation on held-out images (+ blind control) -> a few example answers.
`--dataset ham10000 --data DIR` runs the same path on real HAM10000 images (dermvqa/quickstart_ham.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"synthetic": REPO / "configs" / "tiny_cpu.yaml", "ham10000": REPO / "configs" / "ham10000_cpu.yaml"}


def _echo_alert(alert: dict, note: str = "") -> None:
    """One line: the malignancy referral level set on val and what it catches on test."""
    if "skipped" in alert:
        typer.echo(f"  malignancy referral: not set ({alert['skipped']})")
        return
    a, t = alert["val"], alert["test"]
    melanoma = (f" (melanoma {t['melanoma_sensitivity']:.3f} of {t['n_melanoma']})"
                if t["melanoma_sensitivity"] is not None else "")
    (vlo, vhi), (lo, hi) = a["sensitivity_ci95"], t["sensitivity_ci95"]
    typer.echo(f"  malignancy referral (level {a['threshold']:.3f}, set on {a['n_images']} val images for "
               f"{a['target_sensitivity']:.0%}: val sensitivity {a['sensitivity']:.3f}, 95% CI {vlo:.3f}-{vhi:.3f}): "
               f"test sensitivity {t['sensitivity']:.3f} (95% CI {lo:.3f}-{hi:.3f}){melanoma}, benign referred "
               f"{t['benign_referred']:.3f}{note}")


def _ham10000(data, out: Path, recipe: Path, seed: int) -> None:
    """Run the HAM10000 path and print its figures beside the MedMNIST table's."""
    from dermvqa.quickstart_ham import run_ham

    if data is None or not (Path(data) / "HAM10000_metadata.csv").is_file():
        raise typer.BadParameter("--dataset ham10000 needs --data DIR holding HAM10000_metadata.csv, images/ "
                                 "and dermamnist_split.csv", param_hint="--data")
    r = run_ham(Path(data), out, recipe, seed)
    typer.echo(f"\nDermaMNIST official test split ({r['official_test']['option_likelihood']['n']} images); "
               f"lesion-disjoint part ({r['lesion_disjoint_test']['option_likelihood']['n']}) in brackets; "
               "blind control after /")
    for key, name in (("option_likelihood", "7-class by option likelihood"), ("open_answer", "open answer -> class")):
        o, d = r["official_test"][key], r["lesion_disjoint_test"][key]
        b = r["official_test_blind"][key]
        auc = f", AUC {o['auc']:.3f} [{d['auc']:.3f}] / {b['auc']:.3f}" if "auc" in o else ""
        typer.echo(f"  {name}: accuracy {o['accuracy']:.3f} [{d['accuracy']:.3f}] / {b['accuracy']:.3f}{auc}, "
                   f"balanced accuracy {o['balanced_accuracy']:.3f} [{d['balanced_accuracy']:.3f}], "
                   f"macro-F1 {o['macro_f1']:.3f}")
        typer.echo(f"    melanoma recall {o['melanoma_recall']:.3f} [{d['melanoma_recall']:.3f}]; benign called "
                   f"malignant {o['benign_called_malignant']:.3f} [{d['benign_called_malignant']:.3f}]")
    for fam, runs in r["families"].items():
        typer.echo(f"  {fam}: accuracy {runs['image']['accuracy']:.3f} (n {runs['image']['n']})"
                   + (f" / blind {runs['blind']['accuracy']:.3f}" if "blind" in runs else ""))
    _echo_alert(r["malignancy_alert"], " (the melanoma recall above is the top diagnosis's alone)")
    typer.echo("  MedMNIST v2 (same test split): ResNet-18 28 px 0.735 / AUC 0.917; ResNet-18 224 px 0.754 / 0.920; "
               "Google AutoML Vision 0.768 / 0.914; majority class 0.669")
    s = r["seconds"]
    typer.echo(f"Time: data {s['data']}s, training {s['train']}s, evaluation {s['eval']}s, total {s['total']}s. "
               f"All figures: {out / 'ham10000_metrics.json'}")


def quickstart(out: Path = typer.Option(Path("runs/quickstart"), help="output folder"),
               dataset: str = typer.Option("synthetic", help="synthetic (embedded, no download) or ham10000"),
               data: Path = typer.Option(None, exists=True, file_okay=False,
                                         help="ham10000: folder with HAM10000_metadata.csv, images/, "
                                              "dermamnist_split.csv"),
               images: int = typer.Option(1600, help="number of synthetic lesion images"),
               seed: int = typer.Option(0, help="seed for the world, the QA and training"),
               recipe: Path = typer.Option(None, exists=True, dir_okay=False,
                                           help="training recipe YAML (default: configs/tiny_cpu.yaml, "
                                                "or configs/ham10000_cpu.yaml for ham10000)"),
               ontology: Path = typer.Option(None, exists=True, dir_okay=False,
                                             help="ontology.json (default: the world's Derm1M subset)"),
               families: str = typer.Option("diagnosis,yes_no,multiple_choice,morphology",
                                            help="QA families to synthesize, comma-separated"),
               val_fraction: float = typer.Option(0.0, help="synthetic: share of images in a validation split "
                                                            "(taken from train) on which to set a malignancy "
                                                            "referral level, e.g. 0.1")):
    """Build the synthetic world (or import HAM10000), synthesize QA, train a tiny LLaVA, evaluate it."""
    if dataset not in RECIPES:
        raise typer.BadParameter(f"must be one of {', '.join(RECIPES)}, got {dataset!r}", param_hint="--dataset")
    recipe = recipe or RECIPES[dataset]
    if dataset == "ham10000":
        return _ham10000(data, out, recipe, seed)
    from data_gen.records import read_records
    from data_gen.synth import synthesize
    from data_gen.synthetic_world import build_world
    from dermvqa.eval import run_eval
    from dermvqa.infer.alert import fit_on_val_measure_on_test
    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training
    from PIL import Image

    t0 = time.time()
    world = out / "world"
    csv_path = build_world(world, n_images=images, seed=seed)
    report = synthesize(csv_path, ontology or world / "ontology.json", world, images_dir=world / "images", seed=seed,
                        families=families.split(","), overwrite=True, val_fraction=val_fraction)
    typer.echo(f"QA records per family: {json.dumps(report['families'])}, per split: {json.dumps(report['splits'])}")
    t1 = time.time()
    rec = load_recipe(recipe, [f"data.qa_dir={world / 'qa'}", f"data.image_root={world / 'images'}",
                               f"train.output_dir={out / 'train'}", f"train.seed={seed}"])
    model_dir = run_training(rec)
    t2 = time.time()
    metrics = run_eval(model_dir, f"qa:{world}:test", out / "eval", batch_size=64, blind=True)
    alert = (fit_on_val_measure_on_test(model_dir, world / "qa", world / "images") if val_fraction else
             {"skipped": "no validation split; --val-fraction 0.1 sets one"})
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
    _echo_alert(alert)
    typer.echo(f"Time: data {t1 - t0:.0f}s, training {t2 - t1:.0f}s, evaluation {t3 - t2:.0f}s, "
               f"total {time.time() - t0:.0f}s. Model: {model_dir}")
    typer.echo(f"Ask it yourself: dermvqa chat --model {model_dir} --image {world / 'images' / picks[0]['image']} "
               f"--question \"What is the most likely diagnosis?\"")
