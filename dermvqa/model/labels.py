"""A model folder's label vocabulary (`dermvqa_labels.json`, written by training) and the diagnosis question
it is scored with: what the report and the malignancy alert read, in the form training wrote."""
from __future__ import annotations

import json
from pathlib import Path

from atomic_files import write_text_atomic

LABELS_FILE = "dermvqa_labels.json"
DIAGNOSIS_QUESTION = "What is the most likely diagnosis for this lesion?"


def write_labels(model_dir: str | Path, diagnoses: list[str], ontology_paths: dict[str, list[str]],
                 concepts: list[str]) -> Path:
    """Write the label vocabulary next to a model (atomically)."""
    path = Path(model_dir) / LABELS_FILE
    data = {"diagnoses": list(diagnoses), "ontology_paths": dict(ontology_paths), "concepts": list(concepts)}
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def load_labels(model_dir: str | Path) -> dict:
    """Read and check `dermvqa_labels.json`; errors name the file and the problem."""
    path = Path(model_dir) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the report needs the label vocabulary that training writes "
                                "next to the model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    dx, paths, concepts = data.get("diagnoses"), data.get("ontology_paths", {}), data.get("concepts", [])
    if not isinstance(dx, list) or not dx or not all(isinstance(d, str) and d for d in dx):
        raise ValueError(f"{path}: 'diagnoses' must be a non-empty list of names")
    if len(set(dx)) != len(dx):
        raise ValueError(f"{path}: 'diagnoses' has duplicates")
    if not isinstance(paths, dict) or not all(isinstance(p, list) and all(isinstance(n, str) for n in p)
                                              for p in paths.values()):
        raise ValueError(f"{path}: 'ontology_paths' must map a diagnosis to a list of ontology node names")
    if not isinstance(concepts, list) or not all(isinstance(c, str) and c for c in concepts):
        raise ValueError(f"{path}: 'concepts' must be a list of concept names")
    return {"diagnoses": dx, "ontology_paths": paths, "concepts": sorted(set(concepts))}
