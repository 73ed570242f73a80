"""The training prior over diagnoses (`dermvqa_prior.json`, written by training from its own records) and the
logit adjustment it allows (Menon et al., ICLR 2021): score(name) - tau * log prior(name).

A model trained on unbalanced records learns the class prior into its answers; subtracting the log prior
at scoring time turns the most likely answer into the one that maximises balanced accuracy (tau 1). The
prior is read from the train split only, so no test label can move it.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from atomic_files import write_text_atomic

PRIOR_FILE = "dermvqa_prior.json"


def diagnosis_prior(labels: list[str]) -> dict:
    """Counts and shares of the diagnosis-record labels of the training split."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {"source": "diagnosis records of the train split", "records": total,
            "counts": dict(sorted(counts.items())), "prior": {k: v / total for k, v in sorted(counts.items())}}


def write_prior(model_dir: str | Path, labels: list[str]) -> Path:
    path = Path(model_dir) / PRIOR_FILE
    write_text_atomic(path, json.dumps(diagnosis_prior(labels), indent=1))
    return path


def load_prior(model_dir: str | Path) -> dict[str, float]:
    """name -> training share; errors name the file and the problem."""
    path = Path(model_dir) / PRIOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: logit adjustment needs the training prior that training writes "
                                "next to the model (retrain, or score without adjustment)")
    prior = json.loads(path.read_text(encoding="utf-8")).get("prior")
    if not isinstance(prior, dict) or not prior or not all(isinstance(v, float) and 0 < v <= 1 for v in prior.values()):
        raise ValueError(f"{path}: 'prior' must map each diagnosis to its training share in (0, 1]")
    return prior


def adjusted(scores: list[float], names: list[str], prior: dict[str, float], tau: float) -> list[float]:
    """Log-scores minus tau * log prior; a name training never saw is refused (its prior is unknown)."""
    missing = [n for n in names if n not in prior]
    if missing:
        raise ValueError(f"no training prior for {missing}: the model was not trained on these diagnoses")
    return [s - tau * math.log(prior[n]) for s, n in zip(scores, names)]
