"""Dataset plug-ins of `dermvqa quickstart`: where the images come from, which recipe, which extra report.

Each plug-in module defines PLUGIN, a `Plugin`; dermvqa/quickstart.py lists them and runs the path they share
(data -> recipe -> train -> one model load -> eval -> referral -> extra report -> timings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Prepared:
    """What a plug-in's data step made: the QA folder (holding qa/), the image root, the eval spec."""
    qa_dir: Path
    images: Path
    bench: str
    extras: dict = field(default_factory=dict)  # what the plug-in's own report needs (import CSV, ...)


@dataclass
class Plugin:
    name: str
    recipe: Path
    prepare: Callable  # (out, data, seed, options) -> Prepared; options: images, ontology, families, val_fraction
    report: Callable   # (model, processor, model_dir, prepared, out, metrics, alert) -> dict written to OUT
    echo: Callable     # (report, out) -> None: prints the plug-in's figures
    data_file: str = ""  # a file --data must hold; "" when the plug-in needs no --data
    data_help: str = ""  # what --data must hold, for the error message


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
