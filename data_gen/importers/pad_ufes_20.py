"""PAD-UFES-20 (`metadata.csv`: patient_id, lesion_id, img_id, diagnostic, region, fitspatrick, ...) -> Derm1M format.

Smartphone photographs, not dermoscopy. The six `diagnostic` codes and their Derm1M ontology nodes:
ACK -> exogenous > Actinic keratosis; BCC -> ... malignant > non-melanocytic > Basal cell carcinoma;
MEL -> ... malignant > melanocytic > Malignant melanoma; NEV -> ... benign > melanocytic > Melanocytic
nevus; SCC (Bowen's disease included, as the dataset does) -> ... malignant > non-melanocytic >
Squamous cell carcinoma; SEK -> ... benign > non-melanocytic > Seborrheic keratosis. The release's
`fitspatrick` column (sic) gives the skin type 1-6; the yes/no columns itch, grew, hurt, changed,
bleed, elevation become symptoms. Images are found by file name anywhere under the image folder (the
release splits them into imgs_part_1..3), or by stem whatever the extension (a converted copy: the
metadata names `.png`, the folder holds `.jpg`); each metadata row without an image is a counted skip,
listed in skipped.csv. Split: a split file when given, else by patient_id, so no patient is in two splits.
"""
from __future__ import annotations

from pathlib import Path

from data_gen.importers.common import Candidate, check_mapping, finish, read_split_file, read_table
from data_gen.importers.ham10000 import DX as HAM_DX

_BENIGN = ("proliferations", "benign", "non-melanocytic")
DIAGNOSTIC = {
    "ACK": HAM_DX["akiec"], "BCC": HAM_DX["bcc"], "MEL": HAM_DX["mel"], "NEV": HAM_DX["nv"],
    "SCC": (("proliferations", "malignant", "non-melanocytic", "Squamous cell carcinoma"), "Squamous cell carcinoma"),
    "SEK": (_BENIGN + ("Seborrheic keratosis",), "Seborrheic keratosis"),
}
SYMPTOMS = {"itch": "itch", "grew": "growth", "hurt": "pain", "changed": "change", "bleed": "bleeding",
            "elevation": "elevation"}
REQUIRED = {"patient_id", "lesion_id", "img_id", "diagnostic", "region", "fitspatrick", "age", "gender"}


def _fitzpatrick(value: str) -> tuple[int, str]:
    """(skin type 1-6 or 0 when empty, problem text when the value is not a skin type)."""
    if not value:
        return 0, ""
    try:
        v = int(float(value))
    except ValueError:
        return 0, f"fitspatrick {value!r} is not a number"
    return (v, "") if 1 <= v <= 6 else (0, f"fitspatrick {value!r} outside 1-6")


def caption(r: dict, site: str, age: str) -> str:
    """A caption from the metadata alone: modality, body site, age/sex, skin type."""
    sex = r["gender"].lower() if r["gender"].lower() in ("male", "female") else ""
    who = " ".join(x for x in (f"{age}-year-old" if age else "", sex) if x)
    text = "Clinical smartphone photograph of a skin lesion" + (f" on the {site}" if site else "")
    text += f" of a {who} patient" if who else ""
    fst = f"Fitzpatrick skin type {int(float(r['fitspatrick']))}" if _fitzpatrick(r["fitspatrick"])[0] else ""
    return text + (f", {fst}." if fst else ".")


def import_pad_ufes_20(metadata: Path, images: Path, out: Path, split_file: Path | None = None, ontology=None,
                       strict: bool = False, seed: int = 0, test_fraction: float = 0.2,
                       val_fraction: float = 0.0) -> dict:
    """Write OUT/derm1m.csv and the import report; see the module docstring for the mapping and split."""
    if ontology is not None:
        check_mapping(DIAGNOSTIC, ontology, "PAD-UFES-20 mapping")
    rows = read_table(Path(metadata), REQUIRED)
    given = read_split_file(Path(split_file)) if split_file else None
    candidates = []
    for i, r in enumerate(rows, start=1):
        node, label = DIAGNOSTIC.get(r["diagnostic"].upper(), (None, ""))
        fitz, bad_fitz = _fitzpatrick(r["fitspatrick"])
        try:
            age = str(int(float(r["age"]))) if r["age"] else ""
        except ValueError:
            age = ""
        site = r["region"].lower() if r["region"].upper() not in ("", "UNK") else ""
        c = Candidate(row=i, id=Path(r["img_id"]).stem, group=r["patient_id"], code=r["diagnostic"], node=node,
                      label=label, image=r["img_id"], caption=caption(r, site, age), location=site,
                      symptoms=[v for k, v in SYMPTOMS.items() if r.get(k, "").lower() == "true"], age=age,
                      sex=r["gender"].lower() if r["gender"].lower() in ("male", "female") else "", fitzpatrick=fitz)
        if bad_fitz:
            c.problem, c.detail = "bad skin type", bad_fitz
        if given is not None:
            c.split = given.get(c.id, "")
            if not c.split:
                c.problem, c.detail = "not in the split file", str(split_file)
        candidates.append(c)
    mapping_doc = {code: " > ".join(node) + f" (written as {label!r})" for code, (node, label) in DIAGNOSTIC.items()}
    return finish(candidates, dataset="pad-ufes-20", metadata=Path(metadata), images=Path(images), out=Path(out),
                  mapping_doc=mapping_doc, strict=strict, seed=seed,
                  test_fraction=test_fraction, val_fraction=val_fraction, any_extension=True)
