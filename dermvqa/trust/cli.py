"""Commands `dermvqa ood-fit`, `dermvqa ood-choose` and `dermvqa alert-fit`: a trained model's trust files (the
out-of-distribution summary, the malignancy referral level); heavy imports stay inside each command."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from dermvqa.serve.cli import DEVICE, MODEL
from dermvqa.trust.photos import DEFAULT_COLUMN, HELD_OUT


def ood_fit(model: Path = MODEL,
            qa: Path = typer.Option(..., "--qa", exists=True, file_okay=False, help="the QA folder it trained on"),
            images: Path = typer.Option(..., "--images", exists=True, file_okay=False,
                                        help="folder the records' image paths are relative to"),
            max_images: int = typer.Option(5000, help="most training images to summarise"),
            device: str = DEVICE):
    """Fit the out-of-distribution summary of a trained model's training images into its folder (no retraining)."""
    from data_gen.records import read_records
    from dermvqa.infer.generate import load_model
    from dermvqa.trust.ood import fit_from_records

    records = read_records(qa, split="train")
    if not records:
        raise typer.BadParameter(f"no training records in {qa}", param_hint="--qa")
    m, processor = load_model(model, device=device)
    s = fit_from_records(m, processor, records, images, model, max_images=max_images)
    if s is None:
        raise typer.BadParameter(f"{qa} holds too few training images for a summary", param_hint="--qa")
    typer.echo(f"out-of-distribution summary of {s.meta['n_fit']} images ({len(s.classes)} classes) written to "
               f"{model}; abstains above {s.threshold:.3f} (the {s.meta['quantile']:.0%} point of "
               f"{s.meta['n_held_out']} held-out training images)")


def ood_choose(model: Path = MODEL,
               qa: Path = typer.Option(..., "--qa", exists=True, file_okay=False, help="the QA folder it trained on"),
               images: Path = typer.Option(..., "--images", exists=True, file_okay=False,
                                           help="folder the records' image paths are relative to"),
               reference: list[str] = typer.Option(..., "--reference", help="reference photos of another kind, which "
                                                   "the detector must flag: a folder, a glob (quoted) or a .csv "
                                                   "file; repeatable, one set each (the first also gives the outlier "
                                                   "head its photos)"),
               reference_column: str = typer.Option(DEFAULT_COLUMN, "--reference-column",
                                                    help="the column of a --reference CSV holding photo paths "
                                                         "(relative to the CSV's folder, or absolute)"),
               inside_val: str = typer.Option(HELD_OUT, "--inside-val",
                                              help="in-distribution check: held-out (the held-out training images) "
                                                   "or a split of --qa, e.g. val"),
               max_abstain: float = typer.Option(0.05, help="most in-distribution abstention a candidate may have"),
               limit: int = typer.Option(600, min=1, help="selection photos per set (a fixed sample, seed 0)"),
               outside_limit: int = typer.Option(1000, min=2, help="the outlier head's photos: others of the first "
                                                                   "--reference set"),
               head: bool = typer.Option(True, "--head/--no-head", help="the outlier head among the candidates"),
               device: str = DEVICE):
    """Choose the out-of-distribution detector on reference photos of another kind and write it into the model
    folder (the candidates and the rule: dermvqa/trust/choose.py)."""
    from dermvqa.trust.choose import choose_detector, table
    from dermvqa.trust.ood import META_FILE
    from dermvqa.trust.photos import list_photos

    if not 0 <= max_abstain < 1:
        raise typer.BadParameter(f"must be in [0, 1), got {max_abstain}", param_hint="--max-abstain")
    if len(set(reference)) < len(reference):
        raise typer.BadParameter("the same set is given twice", param_hint="--reference")
    t0 = time.perf_counter()
    references = {spec: list_photos(spec, reference_column) for spec in reference}
    result = choose_detector(model, qa, images, references, inside_val, max_abstain, limit, outside_limit, head,
                             device=device)
    for line in table(result):
        typer.echo(line)
    best, s = result["chosen"], result["summary"]
    typer.echo(f"chosen: {best['pooling']}, image statistics {best['image_stats']}, outlier head "
               f"{best['outlier_head']}, q {best['quantile']} ({time.perf_counter() - t0:.0f} s); wrote "
               f"{model / META_FILE} (threshold {s.threshold:.3f}"
               + (f", outlier threshold {s.outlier_threshold:.3f})" if s.outlier is not None else ")"))


def alert_fit(model: Path = MODEL,
              qa: Path = typer.Option(..., "--qa", exists=True, file_okay=False,
                                      help="a QA folder with held-out records"),
              images: Path = typer.Option(..., "--images", exists=True, file_okay=False,
                                          help="folder the records' image paths are relative to"),
              split: str = typer.Option("val", help="the held-out split to set the level on (never the test split)"),
              sensitivity: float = typer.Option(0.9, help="share of malignant held-out lesions the level must catch"),
              device: str = DEVICE):
    """Set the malignancy referral level of a trained model on held-out images and write it into its folder."""
    from data_gen.records import read_records
    from dermvqa.infer.generate import load_model
    from dermvqa.model.labels import load_labels
    from dermvqa.trust.alert import fit_alert

    if split == "test":
        raise typer.BadParameter("the test split must stay unseen; set the level on a validation split",
                                 param_hint="--split")
    if split == "train":
        raise typer.BadParameter("a level set on the images it trained on overstates what the model catches; set "
                                 "it on a validation split (`dermvqa data synth --val-fraction 0.1`)",
                                 param_hint="--split")
    records = [r for r in read_records(qa, split=split) if r["family"] == "diagnosis"]
    if not records:
        raise typer.BadParameter(f"no diagnosis records of split {split!r} in {qa}", param_hint="--qa")
    labels = load_labels(model)
    m, processor = load_model(model, device=device)
    info = fit_alert(m, processor, records, images, labels, model, sensitivity, split)
    lo, hi = info["sensitivity_ci95"]
    typer.echo(f"malignancy referral level {info['threshold']:.3f} written to {model}: on {info['n_images']} {split} "
               f"images it catches {info['sensitivity']:.1%} of {info['n_malignant']} malignant lesions (95 % CI "
               f"{lo:.1%}-{hi:.1%}; more held-out malignant images narrow it) and refers {info['benign_referred']:.1%} "
               f"of the others")
