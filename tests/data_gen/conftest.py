"""Fixtures for data_gen tests: the real Derm1M samples, CSV writers, and a small synthetic world."""
import csv
from pathlib import Path

import pytest

from tests.conftest import ONTOLOGY, SAMPLE_CSV, SHARED_DATA

DERM1M_ROOT = SHARED_DATA / "derm1m"
TREE = DERM1M_ROOT / "third_party" / "XiejiLi__MAGEN-O-MAKE" / "magen" / "assets" / "derm1m_ontology_tree.json"
CONCEPT_TERMS = DERM1M_ROOT / "concept_annotation" / "term_lists" / "ConceptTerms.json"
COLUMNS = ["filename", "caption", "truncated_caption", "source", "source_type", "disease_label",
           "hierarchical_disease_label", "skin_concept", "body_location", "symptoms", "age", "gender"]


def real_rows() -> list[dict]:
    with open(SAMPLE_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def make_row(filename, label="psoriasis", hier="inflammatory, non-infectious, psoriasis", concepts="red, scaly",
             caption="Close-up photo of red scaly plaques on the elbow.", location="No body location information",
             symptoms="No symptom information", age="No age information", gender="No gender information", **extra):
    return {"filename": filename, "caption": caption, "truncated_caption": caption, "source": "public",
            "source_type": "knowledge", "disease_label": label, "hierarchical_disease_label": hier,
            "skin_concept": concepts, "body_location": location, "symptoms": symptoms, "age": age,
            "gender": gender, **extra}


def synth_kwargs(**kw):
    return {"tree_path": TREE, "concept_terms_path": CONCEPT_TERMS, "progress": False, **kw}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A 96-image synthetic world at 32 px (the lead's renderer), with its CSV and image root."""
    from data_gen.synthetic_world import build_world

    out = tmp_path_factory.mktemp("world")
    csv_path = build_world(out, n_images=96, size=32, seed=0, progress=False)
    return csv_path, out / "images"


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """synthesize() over the 100 real Derm1M rows, all families: (report, records)."""
    from data_gen.records import read_records
    from data_gen.synth import synthesize

    out = tmp_path_factory.mktemp("real")
    report = synthesize(SAMPLE_CSV, ONTOLOGY, out, **synth_kwargs())
    return report, read_records(out / "qa")
