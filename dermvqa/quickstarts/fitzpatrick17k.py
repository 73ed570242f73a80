"""Fitzpatrick17k (the 4,087-photo AJL subset): clinical atlas photos with real skin types I-VI, on a CPU.

ajl_subset.csv + images/<md5hash>.jpg -> Derm1M-format import (the subset's train/test split, 10 % of train
as validation for the malignancy referral, byte-identical duplicates skipped) -> diagnosis (21-way),
neoplasm (malignant / benign / non-neoplastic), yes/no and multiple-choice QA -> tiny LLaVA
(configs/fitzpatrick17k_cpu.yaml) -> its out-of-distribution detector chosen against the HAM10000 train photos
beside --data (`ood_choice`) -> `dermvqa eval` on the test split, whose report carries the per-skin-type
table (accuracy, balanced accuracy, macro-F1 with intervals; skin type by the Scale AI rater,
`fitzpatrick_scale`). Licence: Fitzpatrick17k is CC BY-NC-SA 3.0 (non-commercial, share-alike).
"""
from __future__ import annotations

from pathlib import Path

import typer

from dermvqa.quickstarts import OodChoice, Plugin, Prepared, echo_alert

FAMILIES = ["diagnosis", "neoplasm", "yes_no", "multiple_choice"]
VAL_FRACTION = 0.1


def prepare(out: Path, data: Path, seed: int, options: dict) -> Prepared:
    """Import the AJL subset with its own split (val from train) and synthesize the four QA families."""
    from data_gen.importers.fitzpatrick17k import import_fitzpatrick17k
    from data_gen.ontology import Ontology
    from data_gen.synth import synthesize

    if options["ontology"] is None:
        raise typer.BadParameter("--dataset fitzpatrick17k needs --ontology: Derm1M's ontology.json, against which "
                                 "the 21 labels resolve (derm1m_ontology_tree.json beside it is read too)",
                                 param_hint="--ontology")
    tree = Path(options["ontology"]).with_name("derm1m_ontology_tree.json")
    images, qa = data / "images", out / "data"
    imported = import_fitzpatrick17k(data / "ajl_subset.csv", images, qa,
                                     Ontology.load(options["ontology"], tree if tree.is_file() else None),
                                     seed=seed, val_fraction=options["val_fraction"] or VAL_FRACTION)
    synthesize(qa / "derm1m.csv", qa / "ontology.json", qa, images_dir=images, seed=seed, overwrite=True,
               families=FAMILIES)
    return Prepared(qa, images, f"qa:{qa}:test:root={images}", {"import": imported})


def _figures(classification: dict) -> dict:
    return {k: classification[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in classification}


def report(model, processor, model_dir: Path, prepared: Prepared, out: Path, metrics: dict, alert: dict) -> dict:
    """Headline, per-family accuracy, the 21-way and 3-way classification figures and the per-skin-type table."""
    families = {fam: {run: s["accuracy"] for run, s in runs.items() if "accuracy" in s}
                for fam, runs in metrics["strata"].get("family", {}).items()}
    classes = {run: {fam: _figures(c) for fam, c in by_family.items()}
               for run, by_family in metrics.get("classification", {}).items()}
    return {"import": {k: prepared.extras["import"].get(k) for k in ("rows_read", "rows_written", "skipped", "splits")},
            "headline": {k: metrics[k] for k in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy",
                                                 "blind_open_exact_match") if k in metrics},
            "families": families, "classification": classes, "skin_type": metrics.get("skin_type", {})}


def _cell(s: dict | None) -> str:
    return f"{s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]" if s else "-"


def echo(r: dict, out: Path) -> None:
    """Per-family accuracy with the blind control, then the per-skin-type table of the neoplasm and diagnosis
    questions as metrics.json's skin_type section gives it (report.md has every figure)."""
    typer.echo(f"\nFitzpatrick17k AJL test split; blind control after /; report: {out / 'eval' / 'report.md'}")
    for fam, runs in r["families"].items():
        typer.echo(f"  {fam}: accuracy {_cell(runs.get('image'))}"
                   + (f" / blind {runs['blind']['value']:.3f}" if "blind" in runs else ""))
    for fam, figures in r["classification"].get("image", {}).items():
        typer.echo(f"  {fam} as a classifier: " + ", ".join(f"{k} {_cell(v) if isinstance(v, dict) else v}"
                                                           for k, v in figures.items()))
    for fam in ("neoplasm", "diagnosis"):
        section = r["skin_type"].get("image", {}).get(fam)
        if not section or "types" not in section:
            continue
        typer.echo(f"  {fam} per Fitzpatrick type (fitzpatrick_scale; accuracy / balanced accuracy / macro-F1):")
        for name, t in section["types"].items():
            typer.echo(f"    {name:>7} n {t['n']:4d}{' (few items)' if t['few_items'] else ''}: "
                       + " / ".join(_cell(t[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1")))
        for k, g in section["gap"].items():
            typer.echo(f"    gap in {k}: " + (g["not_computed"] if "not_computed" in g else
                                              f"{g['gap']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] "
                                              f"(type {g['best']} best, {g['worst']} worst)"))
    echo_alert(r["malignancy_alert"])


def ood_choice(data: Path) -> OodChoice | str:
    """Dermoscopy photos, the HAM10000 (DermaMNIST) train split beside --data, as the reference; this model's
    validation split (taken from the AJL train split) as the in-distribution check."""
    from dermvqa.quickstarts.reference import beside, ham10000_photos

    ham = beside(data, "ham10000", "dermamnist_split.csv")
    if isinstance(ham, str):
        return ham
    return OodChoice({"ham10000-train": ham10000_photos(ham, "train")}, inside="val")


PLUGIN = Plugin("fitzpatrick17k", "fitzpatrick17k_cpu", prepare, report, echo,
                data_file="ajl_subset.csv", data_help="ajl_subset.csv and images/ (the Fitzpatrick17k AJL subset)",
                ood_choice=ood_choice)
