"""`dermvqa eval compare RUN1 RUN2 ... RUNk`: a leaderboard of k runs on one benchmark and paired tests of
each run against a baseline (the first run) on the items they all scored.

A run is a `dermvqa eval --out` folder. The benchmark must be the same file in every run (the sha256 in the
run manifest; runs made before the manifest existed are compared by their bench spec, and the report says
so). The per-item scores are recomputed from answers.jsonl with the runner's own scorer (the benchmark is
reloaded from the run's spec, so compare runs where the benchmark paths resolve as they did for the run),
and checked against the run's metrics.json before any test uses them. Paired tests: the bootstrap
interval of the mean difference (dermvqa.eval.paired) for the headline metrics, and McNemar's exact test for
closed accuracy, overall and per Fitzpatrick type, source and family.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from atomic_files import write_text_atomic
from dermvqa.eval.paired import paired_difference
from dermvqa.eval.strata import UNKNOWN, group_rows
from dermvqa.eval.summary import HEADLINE

LEADERBOARD_METRICS = [*HEADLINE, "unparsed"]
PAIRED_DIMENSIONS = ("fitzpatrick", "source", "family")
MCNEMAR_METRICS = ("accuracy",)
RESCORE_TOLERANCE = 1e-6        # metrics.json rounds to 6 decimals
FOREST_PLOT = "compare_forest.png"


@dataclass
class Run:
    path: Path
    name: str
    metrics: dict
    rows: dict[str, dict] = field(default_factory=dict)     # item id -> score row of its answer with the image


def load_metrics(path) -> dict:
    path = Path(path)
    f = path / "metrics.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"no metrics.json at {path}")
    return json.loads(f.read_text())


class StoredAnswers:
    """A run's answers.jsonl, read only (the runner's AnswerLog would write run.json into the run)."""

    def __init__(self, run_dir: Path):
        path = run_dir / "answers.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no answers.jsonl in {run_dir}: compare needs the run's answers")
        self.rows = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {n} is not valid JSON") from None
            self.rows[(row["id"], row["blind"])] = row

    def get(self, item_id: str, blind: bool) -> dict | None:
        return self.rows.get((item_id, blind))


def load_run(path) -> Run:
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    return Run(run_dir, str(path), load_metrics(path))


def check_benchmark(runs: list[Run]) -> list[str]:
    """Refuse runs of different benchmark files; the notes say how the benchmark was compared."""
    shas = {r.name: r.metrics.get("manifest", {}).get("benchmark", {}).get("sha256") for r in runs}
    if all(shas.values()):
        if len(set(shas.values())) > 1:
            raise ValueError("the runs use different benchmark files (sha256 " + ", ".join(
                f"{name} {sha[:12]}" for name, sha in shas.items()) + "); compare runs of one benchmark")
        return [f"Benchmark files identical in every run (sha256 {next(iter(shas.values()))})."]
    specs = {r.name: r.metrics["benchmark"]["spec"] for r in runs}
    if len(set(specs.values())) > 1:
        raise ValueError("the runs use different benchmarks (" + ", ".join(
            f"{name} {spec!r}" for name, spec in specs.items()) + "); compare runs of one benchmark")
    lacking = [name for name, sha in shas.items() if not sha]
    return [f"{', '.join(lacking)}: no benchmark sha256 (no run manifest), so the benchmark is compared by its "
            f"spec only ({next(iter(specs.values()))!r}), not by its files."]


def rescore(run: Run, scorer) -> None:
    """Fill run.rows from answers.jsonl, scored as the runner scores them, and check them against metrics.json."""
    from dermvqa.eval.loaders import load_bench
    from dermvqa.eval.summary import score_rows

    spec = run.metrics["settings"]["bench"]
    try:
        bench = load_bench(spec, strict=False)
    except (ValueError, OSError) as e:           # BenchError is a ValueError
        raise ValueError(f"{run.name}: cannot reload its benchmark {spec!r} to rescore its answers ({e}); run "
                         f"compare where the benchmark paths resolve as they did for the run") from None
    answers = StoredAnswers(run.path)
    missing = set(run.metrics["benchmark"]["missing_images"]["ids"])
    items = [it for it in bench.items if answers.get(it.id, False) is not None and it.id not in missing]
    if len(items) != run.metrics["benchmark"]["items_scored"]:
        raise ValueError(f"{run.name}: {len(items)} answered items found in {spec!r}, but its metrics.json scored "
                         f"{run.metrics['benchmark']['items_scored']}: the benchmark changed since the run")
    rows, _ = score_rows(items, answers, False, scorer)
    reported = run.metrics["overall"]["image"]
    for metric in (m for m in HEADLINE if m in reported):
        values = [r["scores"][metric] for r in rows if metric in r["scores"]]
        mean = sum(values) / len(values) if values else float("nan")
        if not abs(mean - reported[metric]["value"]) <= RESCORE_TOLERANCE:
            raise ValueError(f"{run.name}: its answers rescore to {metric} {mean:.6f}, its metrics.json says "
                             f"{reported[metric]['value']:.6f} (scorer or benchmark changed since the run)")
    run.rows = {r["id"]: r for r in rows}


def leaderboard(runs: list[Run]) -> list[dict]:
    """Each run's own figures from its metrics.json (all its scored items), with image and blind."""
    out = []
    for r in runs:
        overall, st = r.metrics["overall"], r.metrics["settings"]
        out.append({"run": r.name, "model": st["model"], "mode": st["mode"], "max_new_tokens": st["max_new_tokens"],
                    "items_scored": r.metrics["benchmark"]["items_scored"],
                    "image": {m: overall["image"][m] for m in LEADERBOARD_METRICS if m in overall["image"]},
                    "blind": {m: overall["blind"][m] for m in LEADERBOARD_METRICS if m in overall.get("blind", {})}})
    return out


def paired_groups(base: Run, shared: list[str]) -> list[tuple[str, str, list[str]]]:
    """(dimension, stratum, item ids): all shared items, then each stratum of the paired dimensions; ids in the
    order of `shared` (sorted), which fixes what each bootstrap resample draws."""
    groups = [("overall", "all", shared)]
    for dim in PAIRED_DIMENSIONS:
        strata = group_rows([base.rows[i] for i in shared], dim)
        if not set(strata) <= {UNKNOWN}:
            groups += [(dim, name, [row["id"] for row in g]) for name, g in strata.items()]
    return groups


def paired_tests(base: Run, others: list[Run], shared: list[str], n_boot: int, seed: int) -> list[dict]:
    rows = []
    for other in others:
        for dim, name, ids in paired_groups(base, shared):
            for metric in HEADLINE:
                scored = [i for i in ids if metric in base.rows[i]["scores"] and metric in other.rows[i]["scores"]]
                if not scored:
                    continue
                result = paired_difference([base.rows[i]["scores"][metric] for i in scored],
                                           [other.rows[i]["scores"][metric] for i in scored],
                                           f"paired/{dim}/{name}/{metric}", n_boot, seed,
                                           mcnemar=metric in MCNEMAR_METRICS)
                rows.append({"run": other.name, "dimension": dim, "stratum": name, "metric": metric, **result})
    return rows


def _cell(s: dict | None) -> str:
    return f"{s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]" if s else "–"


def render(result: dict) -> str:
    board, paired, base = result["leaderboard"], result["paired"], result["baseline"]
    present = [m for m in LEADERBOARD_METRICS if any(m in b["image"] for b in board)]
    lines = [f"# Compare: {len(board)} runs on `{result['benchmark']['spec']}`", "", *result["notes"], "",
             "## Leaderboard", "", "Each run on all the items it scored (its metrics.json); 95 % bootstrap "
             "intervals; the blind control (a blank image) beside each figure.", "",
             "| run | model | mode | max new tokens | n | " + " | ".join(f"{m} | {m} blind" for m in present) + " |",
             "|---|---|---|---|---|" + "---|---|" * len(present)]
    for b in board:
        cells = [f"{_cell(b['image'].get(m))} | {_cell(b['blind'].get(m))}" for m in present]
        lines.append(f"| {b['run']} | `{b['model']}` | {b['mode']} | {b['max_new_tokens']} | {b['items_scored']} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"## Paired against the baseline {base} ({result['shared_items']} shared items)", "",
              "| run | stratum | metric | n | baseline | run | run − baseline [95% CI] | CI excludes 0 | "
              "McNemar: baseline only / run only right, p |", "|---|---|---|---|---|---|---|---|---|"]
    for p in paired:
        stratum = "overall" if p["dimension"] == "overall" else f"{p['dimension']}={p['stratum']}"
        mc = p.get("mcnemar")
        test = f"{mc['baseline_only_right']} / {mc['other_only_right']}, p={mc['p']:.4g}" if mc else "–"
        excludes = "yes" if p["ci"][0] > 0 or p["ci"][1] < 0 else "no"
        lines.append(f"| {p['run']} | {stratum} | {p['metric']} | {p['n']} | {p['baseline']:.3f} | {p['other']:.3f} | "
                     f"{p['diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {excludes} | {test} |")
    b = result["bootstrap"]
    lines += ["", f"Paired bootstrap: {b['resamples']} resamples of the shared items (the same resamples for every "
              f"run), seed {b['seed']}, percentile 95 % interval. McNemar: exact two-sided binomial test on the "
              "discordant items. Neither is corrected for the number of comparisons.", ""]
    if result.get("plot"):
        lines += [f"![differences against the baseline]({result['plot']})", ""]
    return "\n".join(lines)


def compare(paths: list, out=None, n_boot: int = 1000, seed: int = 0) -> str:
    """Compare k >= 2 runs, the first being the baseline; with `out` write compare.md, compare.json and the
    forest plot there. Returns the Markdown."""
    from dermvqa.eval.metrics import TextScorer

    if len(paths) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(paths)}")
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        raise ValueError(f"a run is given twice: {sorted({n for n in names if names.count(n) > 1})}")
    notes = check_benchmark(runs)
    scorer = TextScorer()
    for r in runs:
        rescore(r, scorer)
    shared = sorted(set.intersection(*(set(r.rows) for r in runs)))
    if not shared:
        raise ValueError("the runs share no scored item: " + ", ".join(f"{r.name} {len(r.rows)}" for r in runs))
    if any(len(r.rows) != len(shared) for r in runs):
        notes.append("The item sets differ (" + ", ".join(f"{r.name} scored {len(r.rows)}" for r in runs)
                     + f"): the paired tests use the {len(shared)} items all runs share.")
    else:
        notes.append(f"Every run scored the same {len(shared)} items.")
    result = {"benchmark": {"spec": runs[0].metrics["benchmark"]["spec"],
                            "sha256": runs[0].metrics.get("manifest", {}).get("benchmark", {}).get("sha256")},
              "baseline": runs[0].name, "runs": names, "shared_items": len(shared), "notes": notes,
              "leaderboard": leaderboard(runs), "paired": paired_tests(runs[0], runs[1:], shared, n_boot, seed),
              "bootstrap": {"resamples": n_boot, "seed": seed, "interval": "percentile 95%"}}
    if out is not None:
        from dermvqa.eval.plots import plot_forest

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result["plot"] = plot_forest(out / FOREST_PLOT, result["paired"], result["baseline"])
        write_text_atomic(out / "compare.json", json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    markdown = render(result)
    if out is not None:
        write_text_atomic(out / "compare.md", markdown)
    return markdown
