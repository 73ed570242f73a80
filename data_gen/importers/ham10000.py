"""HAM10000 (`HAM10000_metadata.csv`: lesion_id, image_id, dx, dx_type, age, sex, localization) -> Derm1M format.

The seven dx codes and the Derm1M ontology node each maps to (DX below, checked against ontology.json
when it is given):

- akiec "actinic keratoses and intraepithelial carcinoma (Bowen's disease)" -> exogenous > Actinic
  keratosis. Most akiec images are actinic keratoses; the Bowen's cases have their own node under
  malignant non-melanocytic, but HAM10000 does not tell them apart, so the majority decides.
- bcc -> proliferations > malignant > non-melanocytic > Basal cell carcinoma.
- bkl "benign keratosis-like lesions" (a group: seborrheic keratosis, solar lentigo, lichen-planus-like
  keratosis) -> proliferations > benign > non-melanocytic > Benign keratosis, the ontology's own leaf
  for that group (its siblings Seborrheic keratosis and "Melasma, Lentigo" name single members only).
- df -> proliferations > benign > non-melanocytic > Dermatofibroma.
- mel -> proliferations > malignant > melanocytic > Malignant melanoma, melanoma.
- nv -> proliferations > benign > melanocytic > Melanocytic nevus.
- vasc "vascular lesions" (a group: cherry angiomas, angiokeratomas, pyogenic granulomas, haemorrhage)
  -> proliferations > benign > non-melanocytic > "Angioma, Hemangioma": the ontology has no vascular
  group node; angiomas are most of the class (Pyogenic granuloma is a separate sibling leaf).

The split comes from a split file (image_id, split; e.g. the DermaMNIST split with train/val/test) when
given, else from the lesion_id, so all images of one lesion share a split.
"""
from __future__ import annotations

from pathlib import Path

from data_gen.importers.common import Candidate, check_mapping, finish, read_split_file, read_table

_MALIGNANT, _BENIGN = ("proliferations", "malignant"), ("proliferations", "benign")
# dx code -> (ontology path, disease_label written: a name the ontology resolves to that path)
DX = {
    "akiec": (("exogenous", "Actinic solar damage(actinic keratosis), Actinic keratosis"), "Actinic keratosis"),
    "bcc": (_MALIGNANT + ("non-melanocytic", "Basal cell carcinoma"), "Basal cell carcinoma"),
    "bkl": (_BENIGN + ("non-melanocytic", "Benign keratosis"), "Benign keratosis"),
    "df": (_BENIGN + ("non-melanocytic", "Dermatofibroma"), "Dermatofibroma"),
    "mel": (_MALIGNANT + ("melanocytic", "Malignant melanoma, melanoma"), "Melanoma"),
    "nv": (_BENIGN + ("melanocytic", "Melanocytic nevus"), "Melanocytic nevus"),
    "vasc": (_BENIGN + ("non-melanocytic", "Angioma, Hemangioma"), "Angioma"),
}
# The medmnist label index of each dx code (DermaMNIST's `label` column).
DERMAMNIST_LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
# How the diagnosis was made, in words the not-a-skin-photo gate does not take for a histology slide.
DX_TYPE = {"histo": "biopsy", "follow_up": "follow-up examination", "consensus": "expert consensus",
           "confocal": "reflectance confocal imaging"}


def caption(r: dict) -> str:
    """A caption from the metadata alone: modality, body site, age/sex, how the diagnosis was made."""
    site = r["localization"] if r["localization"] not in ("", "unknown") else ""
    who = " ".join(x for x in (f"{int(float(r['age']))}-year-old" if r["age"] else "",
                               r["sex"] if r["sex"] in ("male", "female") else "") if x)
    text = "Dermatoscopic image of a pigmented skin lesion" + (f" on the {site}" if site else "")
    text += f" of a {who} patient" if who else ""
    how = DX_TYPE.get(r["dx_type"], "")
    return text + (f"; diagnosis by {how}." if how else ".")


def import_ham10000(metadata: Path, images: Path, out: Path, split_file: Path | None = None, ontology=None,
                    strict: bool = False, seed: int = 0, test_fraction: float = 0.2,
                    val_fraction: float = 0.0) -> dict:
    """Write OUT/derm1m.csv and the import report; see the module docstring for the mapping and split."""
    if ontology is not None:
        check_mapping(DX, ontology, "HAM10000 mapping")
    rows = read_table(Path(metadata), {"lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"})
    given = read_split_file(Path(split_file)) if split_file else None
    candidates, notes = [], {}
    for i, r in enumerate(rows, start=1):
        node, label = DX.get(r["dx"].lower(), (None, ""))
        split = given.get(r["image_id"], "") if given is not None else ""
        try:
            age = str(int(float(r["age"]))) if r["age"] else ""
        except ValueError:
            age = ""
        c = Candidate(row=i, id=r["image_id"], group=r["lesion_id"], code=r["dx"], node=node, label=label,
                      image=f"{r['image_id']}.jpg" if r["image_id"] else "", caption=caption({**r, "age": age}),
                      location="" if r["localization"] == "unknown" else r["localization"], age=age,
                      sex=r["sex"] if r["sex"] in ("male", "female") else "", split=split)
        if given is not None and not split:
            c.problem, c.detail = "not in the split file", str(split_file)
        candidates.append(c)
    if given is not None:
        listed = {r["image_id"] for r in rows}
        notes["split-file ids without a metadata row"] = sum(1 for k in given if k not in listed)
    mapping_doc = {code: " > ".join(node) + f" (written as {label!r})" for code, (node, label) in DX.items()}
    return finish(candidates, dataset="ham10000", metadata=Path(metadata), images=Path(images), out=Path(out),
                  mapping_doc=mapping_doc, strict=strict, seed=seed,
                  test_fraction=test_fraction, val_fraction=val_fraction, notes=notes)
