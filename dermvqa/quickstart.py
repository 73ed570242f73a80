"""`dermvqa quickstart`: the whole path on a CPU, in minutes, for one dataset plug-in (dermvqa/quickstarts/).

data (the embedded synthetic world, or an import of real images) -> ontology-grounded QA -> tiny LLaVA
trained from scratch -> the model loaded once -> its out-of-distribution detector chosen on reference photos of
another kind, where the plug-in has them (dermvqa/trust/choose.py; the synthetic recipe's `ood` section holds the
choice made for it) -> greedy evaluation on held-out images (+ blind control)
-> malignancy referral set on val and measured on test (when there is a validation split) -> the
plug-in's own report (example answers, the MedMNIST 7-class figures, ...) -> OUT/<dataset>_metrics.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from dermvqa.quickstarts import Plugin, echo_ood


def plugins() -> dict[str, Plugin]:
    from dermvqa.quickstarts import fitzpatrick17k, ham10000, synthetic

    return {p.name: p for p in (synthetic.PLUGIN, ham10000.PLUGIN, fitzpatrick17k.PLUGIN)}


def choose_ood(plugin: Plugin, data: Path | None, model_dir: Path, prepared, loaded: tuple) -> dict:
    """The plug-in's out-of-distribution detector, chosen and written into the model folder: the choice's figures,
    or {"skipped": why} (no reference photos at hand, or no candidate within the abstention cap)."""
    from dermvqa.trust.choose import NoCandidate, choose_detector

    choice = plugin.ood_choice(data) if plugin.ood_choice else "no reference photos for this dataset"
    if isinstance(choice, str):
        return {"skipped": choice}
    try:
        result = choose_detector(model_dir, prepared.qa_dir / "qa", prepared.images, choice.references, choice.inside,
                                 choice.max_abstain, choice.limit, choice.outside_limit, loaded=loaded)
    except NoCandidate as e:  # the summary fitted at the end of training stays
        return {"skipped": str(e)}
    return result["summary"].meta["selection"]


def run_quickstart(name: str, out: Path, data: Path | None, seed: int, recipe: str | None, options: dict,
                   overrides: list[str] = ()) -> dict:
    """Run one plug-in's quickstart; returns (and writes to OUT/<name>_metrics.json) its report."""
    from atomic_files import write_text_atomic
    from data_gen.records import open_records
    from dermvqa.eval import run_eval
    from dermvqa.eval.backends.llava import LlavaAdapter
    from dermvqa.trust.alert import fit_on_val_measure_on_test
    from dermvqa.train.recipe import load_recipe
    from dermvqa.train.trainer import run_training

    plugin = plugins()[name]
    t0 = time.time()
    prepared = plugin.prepare(out, data, seed, options)
    t1 = time.time()
    rec = load_recipe(recipe or plugin.recipe, [f"data.qa_dir={prepared.qa_dir / 'qa'}",
                                                f"data.image_root={prepared.images}",
                                                f"train.output_dir={out / 'train'}", f"train.seed={seed}",
                                                *overrides])
    model_dir = run_training(rec)
    t2 = time.time()
    adapter = LlavaAdapter(model_dir, device="cpu", batch_size=64)  # the one load: OOD, eval, referral, report
    model, processor = adapter.model, adapter.processor
    ood = choose_ood(plugin, data, model_dir, prepared, (model, processor))
    t_ood = time.time()
    metrics = run_eval(adapter, prepared.bench, out / "eval", batch_size=64, blind=True)
    if len(open_records(prepared.qa_dir / "qa", split="val")):
        alert = fit_on_val_measure_on_test(model_dir, prepared.qa_dir / "qa", prepared.images,
                                           loaded=(model, processor))
    else:
        alert = {"skipped": "no validation split; --val-fraction 0.1 sets one"}
    report = plugin.report(model, processor, model_dir, prepared, out, metrics, alert)
    t3 = time.time()
    report["malignancy_alert"], report["ood_choice"], report["model"] = alert, ood, str(model_dir)
    report["seconds"] = {"data": round(t1 - t0), "train": round(t2 - t1), "ood_choice": round(t_ood - t2),
                         "eval": round(t3 - t_ood), "total": round(t3 - t0)}
    write_text_atomic(out / f"{name}_metrics.json", json.dumps(report, indent=1) + "\n")
    return report


def quickstart(out: Path = typer.Option(Path("runs/quickstart"), help="output folder"),
               dataset: str = typer.Option("synthetic", help="synthetic (embedded, no download), ham10000 or "
                                                             "fitzpatrick17k"),
               data: Path = typer.Option(None, exists=True, file_okay=False,
                                         help="ham10000: folder with HAM10000_metadata.csv, images/, "
                                              "dermamnist_split.csv; fitzpatrick17k: folder with ajl_subset.csv "
                                              "and images/"),
               images: int = typer.Option(1600, help="number of synthetic lesion images"),
               seed: int = typer.Option(0, help="seed for the world, the QA and training"),
               recipe: str = typer.Option(None, help="training recipe: a YAML file, or a shipped recipe's name such as "
                                                     "tiny_cpu or qwen2.5-7b/stage2_lora (a path that is no file is "
                                                     "looked up among them, a leading configs/ dropped; default: the "
                                                     "dataset's, tiny_cpu, ham10000_cpu or fitzpatrick17k_cpu)"),
               overrides: list[str] = typer.Option([], "--set", help="recipe override KEY=VALUE on a dotted key, "
                                                   "repeatable, e.g. tune.tower_pretrain.skin_type_balance=1"),
               ontology: Path = typer.Option(None, exists=True, dir_okay=False,
                                             help="synthetic: ontology.json (default: the world's Derm1M subset); "
                                                  "fitzpatrick17k: Derm1M's ontology.json (required)"),
               families: str = typer.Option("diagnosis,yes_no,multiple_choice,morphology",
                                            help="synthetic: QA families to synthesize, comma-separated"),
               val_fraction: float = typer.Option(0.0, help="share of images in a validation split (taken from "
                                                            "train) on which to set a malignancy referral level, "
                                                            "e.g. 0.1 (synthetic: none by default; fitzpatrick17k: "
                                                            "0.1 by default; ham10000 has its official one)")):
    """Build the synthetic world (or import a real dataset), synthesize QA, train a tiny LLaVA, evaluate it."""
    known = plugins()
    if dataset not in known:
        raise typer.BadParameter(f"must be one of {', '.join(known)}, got {dataset!r}", param_hint="--dataset")
    plugin = known[dataset]
    if plugin.data_file and (data is None or not (Path(data) / plugin.data_file).is_file()):
        raise typer.BadParameter(f"--dataset {dataset} needs --data DIR holding {plugin.data_help}",
                                 param_hint="--data")
    report = run_quickstart(dataset, out, data, seed, recipe, {"images": images, "ontology": ontology,
                                                               "families": families.split(","),
                                                               "val_fraction": val_fraction}, overrides)
    plugin.echo(report, out)
    echo_ood(report["ood_choice"])
    s = report["seconds"]
    typer.echo(f"Time: data {s['data']}s, training {s['train']}s, out-of-distribution choice {s['ood_choice']}s, "
               f"evaluation {s['eval']}s, total {s['total']}s. Model: {report['model']}. "
               f"All figures: {out / f'{dataset}_metrics.json'}")
