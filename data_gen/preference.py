"""Preference pairs for stage 3 (DPO) from the QA records of the train split, in TRL's preference format.

chosen is always the record's reference answer; rejected is the same answer made wrong by one rule, recorded
in the pair as `rule`:
- `ontology_sibling` / `ontology_cousin` (diagnosis, multiple_choice): the answer names the nearest wrong
  diagnosis synthesis already chose for this image as an ontology neighbour, i.e. its multiple-choice
  distractors (data_gen/balance.py: a run of neighbouring corpus diagnoses, never an ancestor or descendant of
  the truth) and its yes/no negative (sibling first, then cousin). A multiple-choice pair only ever rejects one
  of the options shown. Sibling: same parent (also the same parent name: the flat ontology.json lists nevus and
  melanoma under one `melanocytic`); cousin: any other node of the same top-level group (tinea and nummular
  eczema share only `inflammatory`), the fewest tree steps away first. Another group makes no pair.
- `yes_no_flip` (yes_no): finding and verdict flip together. "The lesion looks like X. Answer: yes." becomes
  "The lesion looks like N, not X. Answer: no." (N the nearest sibling/cousin as above); "The lesion looks like
  X, not Y. Answer: no." becomes "The lesion looks like Y. Answer: yes.".
- `absent_finding` (morphology): the image's listed concept that its closed question asks for is replaced by
  the first surely-absent distractor of that question (data_gen/concepts.py); a closed item's rejected
  answer is its own first distractor.
Every train record that yields no pair is counted with its reason; other splits are counted, never used.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from atomic_files import write_text_atomic
from data_gen.families import morphology, yes_no
from data_gen.records import read_records

SIBLING, COUSIN, FLIP, ABSENT = "ontology_sibling", "ontology_cousin", "yes_no_flip", "absent_finding"
RULES = (SIBLING, COUSIN, FLIP, ABSENT)
DX_FAMILIES = ("diagnosis", "multiple_choice")


def steps_apart(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Edges between two nodes in the tree."""
    shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return len(a) + len(b) - 2 * shared


def relation(truth: tuple[str, ...], other: tuple[str, ...]) -> str | None:
    """SIBLING, COUSIN or None (another top-level group, or the same line of descent) for two diagnosis paths."""
    if truth[:len(other)] == other or other[:len(truth)] == truth:
        return None  # one is the other or its ancestor
    if steps_apart(truth, other) == 2 or (len(truth) > 1 and len(other) > 1 and truth[-2] == other[-2]):
        return SIBLING
    return COUSIN if truth[0] == other[0] else None


def diagnosis_paths(records: list[dict]) -> dict[str, tuple[str, ...]]:
    """Diagnosis name -> ontology path, from the records that name one diagnosis (diagnosis, multiple_choice)."""
    paths: dict[str, tuple[str, ...]] = {}
    for r in records:
        if r["family"] in DX_FAMILIES and r["ontology_path"] and r["ontology_path"][-1:] != [""]:
            paths.setdefault(r["label"], tuple(r["ontology_path"]))
    return paths


def _neighbours(image_records: list[dict]) -> list[str]:
    """The wrong diagnoses synthesis offered for this image: multiple-choice distractors, the yes/no negative."""
    names = []
    for r in image_records:
        if r["family"] == "multiple_choice":
            names += [o for i, o in enumerate(r["options"]) if i != r["answer_index"]]
        elif r["family"] == yes_no.NAME and r["answer_index"] == 1:
            names.append(yes_no.asked_name(r["answer"], 1))
    return list(dict.fromkeys(names))


def _nearest(truth: tuple[str, ...], names: list[str], paths: dict) -> tuple[str, str] | tuple[None, str]:
    """(name, rule) of the closest sibling/cousin among `names`, or (None, why not)."""
    found = [(rel != SIBLING, steps_apart(truth, paths[name]), name, rel) for name in names
             if name in paths and (rel := relation(truth, paths[name]))]
    if not names:
        return None, "synthesis chose no neighbour for this image (no multiple-choice or yes/no negative)"
    if not found:
        return None, ("no sibling or cousin among the image's neighbours" if any(n in paths for n in names)
                      else "neighbour diagnosis not found in the records")
    *_, name, rel = min(found)
    return name, rel


def _rejected(r: dict, image_records: list[dict], paths: dict) -> tuple[str | None, str, str]:
    """(rejected answer, rule, rejected name) for one record, or (None, reason, "")."""
    family, truth = r["family"], tuple(r["ontology_path"])
    if family in DX_FAMILIES or (family == yes_no.NAME and r["answer_index"] == 0):
        name = r["label"] if family in DX_FAMILIES else yes_no.asked_name(r["answer"], 0)
        if paths.get(name) != truth:
            return None, "not a single known diagnosis", ""
        offered = [o for i, o in enumerate(r["options"]) if i != r["answer_index"]] if family == "multiple_choice" \
            else _neighbours(image_records)
        wrong, rule = _nearest(truth, offered, paths)
        if wrong is None:
            return None, rule, ""
        if family in DX_FAMILIES:
            return wrong, rule, wrong
        return yes_no.ANSWERS[1].format(dx=wrong, neg=name), FLIP, wrong
    if family == yes_no.NAME:
        asked = yes_no.asked_name(r["answer"], 1)
        return yes_no.ANSWERS[0].format(dx=asked), FLIP, asked
    if family == morphology.NAME:
        if r["options"]:  # a closed item: its first offered distractor instead of the offered feature
            absent = next(o for i, o in enumerate(r["options"]) if i != r["answer_index"])
            return absent, ABSENT, absent
        closed = next((c for c in image_records if c["family"] == morphology.NAME and c["options"]), None)
        if closed is None:
            return None, "no closed morphology question naming an absent finding", ""
        absent = next(o for i, o in enumerate(closed["options"]) if i != closed["answer_index"])
        return ", ".join(absent if c == closed["label"] else c for c in r["answer"].split(", ")), ABSENT, absent
    return None, f"no preference rule for family {family}", ""


def _pair(r: dict, rejected: str, rule: str, wrong: str) -> dict:
    """One pair in TRL's conversational preference format, plus where it came from."""
    return {"id": f"{r['id']}-{rule}", "image": r["image"],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
            "chosen": [{"role": "assistant", "content": r["answer"]}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "rule": rule, "rejected_name": wrong, "family": r["family"], "record_id": r["id"],
            "ontology_path": r["ontology_path"], "fitzpatrick": r["fitzpatrick"]}


def preference_pairs(records: list[dict]) -> tuple[list[dict], dict]:
    """Pairs from the train records (sorted by record id) and the report counting every record's fate."""
    paths = diagnosis_paths(records)
    train = sorted((r for r in records if r["split"] == "train"), key=lambda r: r["id"])
    by_image = defaultdict(list)
    for r in train:
        by_image[r["image"]].append(r)
    pairs, skipped = [], Counter()
    for r in train:
        rejected, rule, wrong = _rejected(r, by_image[r["image"]], paths)
        if rejected is None:
            skipped[f"{r['family']}: {rule}"] += 1
        elif rejected == r["answer"]:
            skipped[f"{r['family']}: rejected answer equals the reference"] += 1
        else:
            pairs.append(_pair(r, rejected, rule, wrong))
    report = {"records": len(records), "train_records": len(train),
              "not_train_records": dict(sorted(Counter(r["split"] for r in records if r["split"] != "train").items())),
              "pairs": len(pairs), "by_rule": {k: sum(p["rule"] == k for p in pairs) for k in RULES},
              "by_family": dict(sorted(Counter(p["family"] for p in pairs).items())),
              "skipped": dict(sorted(skipped.items())), "images": len({p["image"] for p in pairs})}
    return pairs, report


def report_path(out: Path) -> Path:
    return out.with_name(out.stem + ".report.json")


def export_preference(qa_dir: str | Path, out: str | Path) -> dict:
    """Write the pairs as JSON lines to `out` and the counts to `<out stem>.report.json`; return the report."""
    out, qa_dir = Path(out), Path(qa_dir)
    if not qa_dir.is_dir():
        raise FileNotFoundError(f"--qa {qa_dir}: no such folder (give the qa/ folder `dermvqa data synth` wrote)")
    pairs, report = preference_pairs(read_records(qa_dir))
    if not pairs:
        raise ValueError(f"{qa_dir}: no preference pair could be made from the train split (skipped: "
                         f"{report['skipped'] or 'no train records'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    write_text_atomic(report_path(out), json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return report
