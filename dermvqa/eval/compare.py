"""`dermvqa eval compare A B`: two runs side by side, B − A, and whether the 95 % intervals separate them."""
from __future__ import annotations

import json
from pathlib import Path

from dermvqa.eval.summary import HEADLINE


def load_metrics(path) -> dict:
    path = Path(path)
    f = path / "metrics.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"no metrics.json at {path}")
    return json.loads(f.read_text())


def _row(section: str, metric: str, a: dict | None, b: dict | None) -> dict:
    row = {"section": section, "metric": metric, "a": a, "b": b, "diff": None, "separated": None}
    if a and b:
        row["diff"] = b["value"] - a["value"]
        row["separated"] = a["ci"][1] < b["ci"][0] or b["ci"][1] < a["ci"][0]
    return row


def compare_rows(a: dict, b: dict) -> list[dict]:
    """Overall metrics (with image, then blind), then the headline metrics of every shared stratum."""
    rows = []
    for run in ("image", "blind"):
        oa, ob = a["overall"].get(run, {}), b["overall"].get(run, {})
        rows += [_row(f"overall/{run}", m, oa.get(m), ob.get(m)) for m in sorted(set(oa) | set(ob))]
    for dim in a["strata"]:
        for name in sorted(set(a["strata"][dim]) & set(b["strata"].get(dim, {}))):
            sa, sb = a["strata"][dim][name]["image"], b["strata"][dim][name]["image"]
            rows += [_row(f"{dim}={name}", m, sa.get(m), sb.get(m)) for m in HEADLINE if m in sa or m in sb]
    return rows


def _cell(s: dict | None) -> str:
    return f"{s['value']:.3f} [{s['ci'][0]:.3f},{s['ci'][1]:.3f}]" if s else "–"


def format_table(rows: list[dict], name_a: str, name_b: str) -> str:
    head = ["section", "metric", f"A: {name_a}", f"B: {name_b}", "B − A", "intervals separate"]
    body = [[r["section"], r["metric"], _cell(r["a"]), _cell(r["b"]),
             "–" if r["diff"] is None else f"{r['diff']:+.3f}",
             "–" if r["separated"] is None else ("YES" if r["separated"] else "no")] for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare(path_a, path_b) -> str:
    a, b = load_metrics(path_a), load_metrics(path_b)
    notes = []
    ba, bb = a["benchmark"], b["benchmark"]
    if (ba["spec"], ba["items_scored"]) != (bb["spec"], bb["items_scored"]):
        notes.append(f"note: different benchmarks or item counts ({ba['spec']}, {ba['items_scored']} items "
                     f"vs {bb['spec']}, {bb['items_scored']} items)")
    rows = compare_rows(a, b)
    n_sep = sum(1 for r in rows if r["separated"])
    notes.append(f"{n_sep} of {sum(1 for r in rows if r['separated'] is not None)} compared figures have "
                 f"non-overlapping 95% intervals")
    return format_table(rows, str(path_a), str(path_b)) + "\n\n" + "\n".join(notes)
