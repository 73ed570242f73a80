"""Fitzpatrick17k (`fitzpatrick17k.csv`: md5hash, fitzpatrick_scale, label, three_partition_label) -> Derm1M format.

Clinical atlas photographs with a Fitzpatrick skin type (1-6; -1 unknown) per image: the real
skin-type labels for fairness strata. The 114 labels are resolved against the Derm1M ontology (so
`--ontology` is required), with `three_partition_label` (benign / malignant / non-neoplastic) deciding
between the benign and malignant copies of a node. ALIASES below maps the labels whose F17K spelling
the ontology lacks onto the node they name (a subtype onto its parent where the ontology has no
subtype node); the remaining unknown labels are skipped and counted. The images are not part of the
CSV: each is expected as `<md5hash>.jpg` under the image folder, and every row without its file is
skipped and listed in skipped.csv. There are no patient ids, so the fallback split is by image.
"""
from __future__ import annotations

from pathlib import Path

from data_gen.importers.common import Candidate, finish, read_split_file, read_table
from data_gen.ontology import Ontology

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
}
REQUIRED = {"md5hash", "fitzpatrick_scale", "label", "three_partition_label"}


def _resolve(ontology: Ontology, label: str, partition: str) -> tuple[tuple[str, ...] | None, str]:
    """(ontology path, disease_label to write) for an F17K label, or (None, why) when it has no node."""
    name = ALIASES.get(label.lower(), label)
    res = ontology.resolve(name, partition)
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
    candidates, mapping = [], {}
    for i, r in enumerate(rows, start=1):
        partition = {"non-neoplastic": ""}.get(r["three_partition_label"], r["three_partition_label"])
        node, label = _resolve(ontology, r["label"], partition)
        mapping[r["label"]] = " > ".join(node) + (f" (written as {label!r})" if label != r["label"] else "") \
            if node else f"none ({label})"
        try:
            fitz = int(float(r["fitzpatrick_scale"]))
        except ValueError:
            fitz = -2
        c = Candidate(row=i, id=r["md5hash"], group=r["md5hash"], code=r["label"], node=node,
                      label=label if node else "", image=f"{r['md5hash']}.jpg" if r["md5hash"] else "",
                      caption=f"Clinical photograph of skin, Fitzpatrick skin type {fitz}." if fitz > 0 else
                      "Clinical photograph of skin.", fitzpatrick=max(fitz, 0))
        if node is None:
            c.problem, c.detail = "label not in the ontology", f"{r['label']!r} ({label})"
        elif fitz not in (-1, 1, 2, 3, 4, 5, 6):
            c.problem, c.detail = "bad skin type", f"fitzpatrick_scale {r['fitzpatrick_scale']!r}"
        if given is not None:
            c.split = given.get(c.id, "")
            if not c.split:
                c.problem, c.detail = "not in the split file", str(split_file)
        candidates.append(c)
    return finish(candidates, dataset="fitzpatrick17k", metadata=Path(metadata), images=Path(images), out=Path(out),
                  mapping_doc=dict(sorted(mapping.items())), strict=strict, seed=seed,
                  test_fraction=test_fraction, val_fraction=val_fraction)
