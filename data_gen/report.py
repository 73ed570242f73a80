"""Merge per-part statistics into report.json and write a short report.md beside it."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from data_gen.gates import Rejections
from atomic_files import write_text_atomic

_COUNTERS = ("families", "answer_types", "splits", "sources", "source_types", "ontology_levels", "images_by_split",
             "not_applicable", "tallies")


def merge_stats(parts: list[dict], n_parts: int, settings: dict, yes_no_dropped: int) -> dict:
    parts = sorted(parts, key=lambda p: p["part"])
    merged = {k: Counter() for k in _COUNTERS}
    rejections = Rejections()
    yes_no: dict[str, list[int]] = {}
    for p in parts:
        for k in _COUNTERS:
            merged[k].update(p.get(k, {}))  # parts written before a counter existed lack it
        rejections.merge(p["rejections"])
        for name, (yes, no) in p["yes_no_asked"].items():
            tally = yes_no.setdefault(name, [0, 0])
            tally[0] += yes
            tally[1] += no
    imbalance = max((abs(y - n) for y, n in yes_no.values()), default=0)
    return {
        "complete": len(parts) == n_parts, "parts_done": len(parts), "parts_total": n_parts,
        "rows": {"read": sum(p["rows"] for p in parts), "accepted": sum(p["rows_accepted"] for p in parts)},
        "records": sum(p["records"] for p in parts),
        **{k: dict(sorted(v.items())) for k, v in merged.items()},
        "yes_no": {"asked_per_diagnosis": dict(sorted(yes_no.items())), "max_yes_minus_no": imbalance,
                   "yes_dropped_for_balance": yes_no_dropped},
        "rejections": rejections.as_dict(), "settings": settings,
    }


def _markdown(r: dict) -> str:
    lines = ["# QA synthesis report", "",
             f"Parts done: {r['parts_done']}/{r['parts_total']} ({'complete' if r['complete'] else 'INCOMPLETE'}). "
             f"Rows read: {r['rows']['read']}, accepted: {r['rows']['accepted']}. Records: {r['records']}.", ""]
    for key in ("families", "answer_types", "splits", "images_by_split", "sources", "source_types", "ontology_levels",
                "not_applicable", "tallies"):
        lines += [f"## {key.replace('_', ' ')}", "", "| value | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in r[key].items()] + [""]
    lines += ["## yes/no balance", "",
              f"Largest |yes - no| for one asked diagnosis in one split: {r['yes_no']['max_yes_minus_no']}; "
              f"yes questions dropped to keep the balance: {r['yes_no']['yes_dropped_for_balance']}.", "",
              "## rejections (reason: count; first example)", "", "| reason | count | example |", "|---|---|---|"]
    for reason, info in r["rejections"].items():
        ex = (info["examples"] or [""])[0].replace("|", "/")
        lines.append(f"| {reason} | {info['count']} | {ex[:120]} |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "report.md", _markdown(report))
