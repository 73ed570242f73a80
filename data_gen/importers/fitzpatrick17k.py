"""Fitzpatrick17k (`fitzpatrick17k.csv` or the 4,087-image `ajl_subset.csv`) -> Derm1M format.

Clinical atlas photographs with a Fitzpatrick skin type (1-6; -1 unknown) per image: the real
skin-type labels for fairness strata. Two raters: `fitzpatrick_scale` is the primary one (the
`fitzpatrick` column and QARecord.fitzpatrick); `fitzpatrick_centaur` is kept beside it in the CSV.
`three_partition_label` (malignant / benign / non-neoplastic) is written too, the 3-way target of the
`neoplasm` QA family. The labels are resolved against the Derm1M ontology (so `--ontology` is
required), with `three_partition_label` deciding between the benign and malignant copies of a node (a
non-neoplastic label found under both, keloid, takes the benign copy).
ALIASES below maps the labels whose F17K spelling the ontology lacks onto the node they name (a
subtype onto its parent where the ontology has no subtype node; dermatomyositis onto the ontology's
"Autoimmune dermatitis" leaf; mycosis fungoides onto "Cutaneous T-cell lymphoma", since Derm1M files
its own "Mycosis fungoides" node under bacterial infections); the remaining unknown labels are
skipped and counted. Each image is expected as `<md5hash>.jpg` under the image folder; every row
without its file is skipped and listed in skipped.csv.

Split: a split file when given; else the AJL subset's own `ajl_split` (train / test, by image; the
test fraction is then unused), with `val_fraction` of train moved to val; else (the full CSV, which
has no patient ids) by image. The subset flags three byte-identical pairs (`identical_content_as`):
the second of each pair is skipped as a duplicate, so one picture never sits in two splits.
"""
from __future__ import annotations

from pathlib import Path

from data_gen.importers.common import Candidate, ImportFailed, finish, read_split_file, read_table
from data_gen.ontology import Ontology
from data_gen.split import assign_split

ALIASES = {
    "acne": "Acne vulgaris",
    "basal cell carcinoma morpheiform": "Basal cell carcinoma",
    "solid cystic basal cell carcinoma": "Basal cell carcinoma",
    "nevocytic nevus": "Melanocytic nevus",
    "granuloma pyogenic": "Pyogenic granuloma",
    "porokeratosis actinic": "Disseminated actinic porokeratosis",
    "dyshidrotic eczema": "Dyshidrosiform eczema",
    "lichen simplex": "Lichen simplex chronicus",
    "hidradenitis": "hidradenitis suppurativa",
    "ichthyosis vulgaris": "Ichthyosis",
    "fixed eruptions": "Fixed drug eruption",
    "erythema annulare centrifigum": "Erythema annulare centrifugum",
    "stevens johnson syndrome": "Stevens-Johnson syndrome",
    "papilomatosis confluentes and reticulate": "Confluent and reticulated papillomatosis",
    "lupus subacute": "Lupus erythematosus",
    "lichen amyloidosis": "Amyloidosis",
    "dermatomyositis": "Autoimmune dermatitis",
    "mycosis fungoides": "Cutaneous T-cell lymphoma",
}
REQUIRED = {"md5hash", "fitzpatrick_scale", "label", "three_partition_label"}
SUBSET_SPLIT = "ajl_split"
DUPLICATE = "byte-identical duplicate"


def _skin_type(value: str) -> int:
    """1-6, -1 unknown, -2 when the value is not a skin type at all."""
    try:
        fitz = int(float(value))
    except ValueError:
        return -2
    return fitz if fitz in (-1, 1, 2, 3, 4, 5, 6) else -2


def _split(r: dict, given: dict | None, seed: int, val_fraction: float) -> str:
    """The split file's split, else the subset's ajl_split (val_fraction of train to val), else "" (by image)."""
    if given is not None:
        return given.get(r["md5hash"], "")
    split = r.get(SUBSET_SPLIT, "")
    return assign_split(r["md5hash"], seed, 0.0, val_fraction) if split == "train" else split


def _resolve(ontology: Ontology, label: str, partition: str) -> tuple[tuple[str, ...] | None, str]:
    """(ontology path, disease_label to write) for an F17K label, or (None, why) when it has no node."""
    name = ALIASES.get(label.lower(), label)
    res = ontology.resolve(name, partition)
    if not partition and res.problem.startswith("ambiguous benign/malignant"):
        res = ontology.resolve(name, "benign")  # a non-neoplastic growth (keloid): not its malignant copy
    if res.problem or len(res.paths) != 1:
        return None, res.problem or "several diagnoses"
    if ontology.is_grouping(res.paths[0]):
        return None, "label is an ontology group"
    return tuple(res.paths[0]), name


def import_fitzpatrick17k(metadata: Path, images: Path, out: Path, ontology: Ontology, split_file: Path | None = None,
                          strict: bool = False, seed: int = 0, test_fraction: float = 0.2,
                          val_fraction: float = 0.0) -> dict:
    """Write OUT/derm1m.csv and the import report; see the module docstring for labels, images and split."""
    rows = read_table(Path(metadata), REQUIRED)
    given = read_split_file(Path(split_file)) if split_file else None
    subset = bool(rows) and SUBSET_SPLIT in rows[0]
    if subset and given is None and any(r[SUBSET_SPLIT] not in ("train", "test") for r in rows):
        bad = next(i for i, r in enumerate(rows, start=1) if r[SUBSET_SPLIT] not in ("train", "test"))
        raise ImportFailed(f"{metadata}: data row {bad}: {SUBSET_SPLIT} {rows[bad - 1][SUBSET_SPLIT]!r} "
                           "is not train or test")
    row_of = {r["md5hash"]: i for i, r in enumerate(rows, start=1)}
    candidates, mapping, notes = [], {}, {}
    for i, r in enumerate(rows, start=1):
        partition = {"non-neoplastic": ""}.get(r["three_partition_label"], r["three_partition_label"])
        node, label = _resolve(ontology, r["label"], partition)
        mapping[r["label"]] = " > ".join(node) + (f" (written as {label!r})" if label != r["label"] else "") \
            if node else f"none ({label})"
        fitz, centaur = _skin_type(r["fitzpatrick_scale"]), _skin_type(r.get("fitzpatrick_centaur", ""))
        c = Candidate(row=i, id=r["md5hash"], group=r["md5hash"], code=r["label"], node=node,
                      label=label if node else "", image=f"{r['md5hash']}.jpg" if r["md5hash"] else "",
                      caption=f"Clinical photograph of skin, Fitzpatrick skin type {fitz}." if fitz > 0 else
                      "Clinical photograph of skin.", fitzpatrick=max(fitz, 0),
                      split=_split(r, given, seed, val_fraction),
                      extra={"fitzpatrick_centaur": str(centaur) if centaur > 0 else "",
                             "three_partition_label": r["three_partition_label"]})
        twin = row_of.get(r.get("identical_content_as", ""), i)
        if node is None:
            c.problem, c.detail = "label not in the ontology", f"{r['label']!r} ({label})"
        elif fitz == -2:
            c.problem, c.detail = "bad skin type", f"fitzpatrick_scale {r['fitzpatrick_scale']!r}"
        elif twin < i:
            c.problem, c.detail = DUPLICATE, f"same bytes as {rows[twin - 1]['md5hash']} (row {twin}), kept"
        elif given is not None and not c.split:
            c.problem, c.detail = "not in the split file", str(split_file)
        if r.get("qc", "").startswith("3"):
            notes["rows a dermatologist's qc marks wrongly labelled (kept)"] = \
                notes.get("rows a dermatologist's qc marks wrongly labelled (kept)", 0) + 1
        candidates.append(c)
    notes["skin type rater"] = "fitzpatrick_scale (fitzpatrick_centaur in its own column)"
    if subset and given is None:
        notes["split"] = f"{SUBSET_SPLIT} of {Path(metadata).name}, val fraction {val_fraction} of train"
    return finish(candidates, dataset="fitzpatrick17k", metadata=Path(metadata), images=Path(images), out=Path(out),
                  mapping_doc=dict(sorted(mapping.items())), strict=strict, seed=seed,
                  test_fraction=test_fraction, val_fraction=val_fraction, notes=notes)
