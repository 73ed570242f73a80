"""Dataset plug-ins of `dermvqa quickstart`: where the images come from, which recipe, which extra report.

Each plug-in module defines PLUGIN, a `Plugin`; dermvqa/quickstart.py lists them and runs the path they share
(data -> recipe -> train -> one model load -> out-of-distribution choice -> eval -> referral -> extra report ->
timings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Prepared:
    """What a plug-in's data step made: the QA folder (holding qa/), the image root, the eval spec."""
    qa_dir: Path
    images: Path
    bench: str
    extras: dict = field(default_factory=dict)  # what the plug-in's own report needs (import CSV, ...)


@dataclass
class OodChoice:
    """How the quickstart chooses its model's out-of-distribution detector (dermvqa/trust/choose.py): reference
    photos of another kind per set name, the in-distribution check, and caps that keep the run short."""
    references: dict[str, list[Path]]
    inside: str = "held-out"
    max_abstain: float = 0.05
    limit: int = 300          # selection photos per set
    outside_limit: int = 500  # the outlier head's photos


@dataclass
class Plugin:
    name: str
    recipe: str  # a shipped recipe (dermvqa.configs)
    prepare: Callable  # (out, data, seed, options) -> Prepared; options: images, ontology, families, val_fraction
    report: Callable   # (model, processor, model_dir, prepared, out, metrics, alert) -> dict written to OUT
    echo: Callable     # (report, out) -> None: prints the plug-in's figures
    data_file: str = ""  # a file --data must hold; "" when the plug-in needs no --data
    data_help: str = ""  # what --data must hold, for the error message
    ood_choice: Callable | None = None  # (data) -> OodChoice, or a str: why no reference photos are at hand


def echo_alert(alert: dict, note: str = "") -> None:
    """One line: the malignancy referral level set on val and what it catches on test."""
    import typer

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


def echo_ood(selection: dict) -> None:
    """One line: the out-of-distribution detector chosen for the model and what it flagged, or why none was."""
    import typer

    if "skipped" in selection:
        typer.echo(f"  out-of-distribution detector: the recipe's ood section ({selection['skipped']})")
        return
    flagged = ", ".join(f"{o} {selection[f'flagged_{o}']:.3f}" for o in selection["outside"])
    typer.echo(f"  out-of-distribution detector (dermvqa ood-choose): {selection['pooling']} features"
               f"{' + image statistics' if selection['image_stats'] else ''}"
               f"{' + outlier head' if selection['outlier_head'] else ''} at the {selection['quantile']} quantile; "
               f"abstains on {selection['abstain_inside']:.3f} of {selection['inside']}, flags {flagged}")
