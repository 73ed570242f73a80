"""report.md (and its PNG plots) from the metrics tree and the run's timing."""
from __future__ import annotations

from pathlib import Path

from atomic_files import write_text_atomic
from dermvqa.eval.judge import judge_line
from dermvqa.eval.manifest import failure_line, manifest_lines
from dermvqa.eval.summary import HEADLINE

MAX_LISTED_MISSING = 20


def unparsed_line(m: dict) -> str:
    """'Closed replies committing to no offered option: image 3 (not an option 2, empty 1); blind 0.'"""
    reasons = m.get("unparsed_reasons", {})
    parts = []
    for run, n in m["unparsed_closed_replies"].items():
        why = ", ".join(f"{r.replace('_', ' ')} {c}" for r, c in reasons.get(run, {}).items())
        parts.append(f"{run} {n}" + (f" ({why})" if why else ""))
    return "Closed replies committing to no offered option (scored wrong): " + "; ".join(parts) + "."


def failure_detail_lines(m: dict) -> list[str]:
    """The first failed answer of each reason (the server's message, a hint) and the answers cut at the token
    limit, as plain sentences: report.md lists them, `dermvqa eval` prints them."""
    lines = [f"{reason}: first at {e['id']} ({e['run']}): {e.get('error', 'no message')}"
             + (f" (hint: {e['hint']})" if e.get("hint") else "")
             for reason, e in m.get("answer_failure_examples", {}).items()]
    cut = {run: c.get("length", 0) for run, c in m.get("finish_reasons", {}).items()}
    if any(cut.values()):
        lines.append(f"Answers cut at the token limit (finish_reason length, max {m['settings']['max_new_tokens']} "
                     "new tokens): " + "; ".join(f"{run} {n} of {m['benchmark']['items_scored']}"
                                                 for run, n in cut.items()) + ".")
    return lines


def fmt(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"


def _diff(a: dict | None, b: dict | None) -> str:
    return f"{a['value'] - b['value']:+.3f}" if a and b else "–"


def overall_table(m: dict) -> list[str]:
    image, blind = m["overall"]["image"], m["overall"].get("blind", {})
    lines = ["| metric | n | with image [95% CI] | blind [95% CI] | image − blind |", "|---|---|---|---|---|"]
    for name, s in image.items():
        lines.append(f"| {name} | {s['n']} | {fmt(s)} | {fmt(blind.get(name))} | {_diff(s, blind.get(name))} |")
    return lines


CLASSIFIER_METRICS = ["balanced_accuracy", "macro_f1", "auc", "likelihood_accuracy"]


def classification_lines(classes: dict) -> list[str]:
    """One row per (classifier family, metric): with image and blind, with intervals."""
    image, blind = classes.get("image", {}), classes.get("blind", {})
    lines = ["| family | classes | metric | with image [95% CI] | blind [95% CI] |", "|---|---|---|---|---|"]
    notes = []
    for fam, c in image.items():
        for name in CLASSIFIER_METRICS:
            if c.get(name):
                lines.append(f"| {fam} | {len(c['classes'])} | {name} | {fmt(c[name])} | "
                             f"{fmt(blind.get(fam, {}).get(name))} |")
        if "not_computed" in c:
            notes.append(f"{fam}: {c['not_computed']}.")
    return lines + [""] + notes if len(lines) > 2 else notes


def strata_table(strata: dict) -> list[str]:
    present = [h for h in HEADLINE if any(h in s["image"] for s in strata.values())]
    head = "| stratum | " + " | ".join(f"{h} (n) | {h} blind" for h in present) + " |"
    lines = [head, "|---|" + "---|---|" * len(present)]
    for name, s in strata.items():
        cells = []
        for h in present:
            v = s["image"].get(h)
            cells += [f"{fmt(v)} ({v['n']})" if v else "–", fmt(s.get("blind", {}).get(h))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def gap_lines(gaps: dict) -> list[str]:
    rows = [(m, g) for m, g in gaps.get("image", {}).items()]
    if not rows:
        return []
    lines = ["| metric | best type | worst type | gap [95% CI] | blind gap |", "|---|---|---|---|---|"]
    for m, g in rows:
        blind = gaps.get("blind", {}).get(m, {})
        if "gap" not in g:
            lines.append(f"| {m} | – | – | not computed: {g['not_computed']} | – |")
            continue
        bg = f"{blind['gap']:.3f}" if "gap" in blind else "–"
        lines.append(f"| {m} | {g['best']} ({g['means'][g['best']]:.3f}, n={g['n'][g['best']]}) | "
                     f"{g['worst']} ({g['means'][g['worst']]:.3f}, n={g['n'][g['worst']]}) | "
                     f"{g['gap']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] | {bg} |")
    return lines


SKIN_TYPE_FIGURES = ["accuracy", "balanced_accuracy", "macro_f1"]


def skin_type_lines(skin: dict, min_n: int) -> list[str]:
    """Per family: one row per Fitzpatrick type (few-item types marked), then the best - worst gap per figure."""
    image, blind = skin.get("image", {}), skin.get("blind", {})
    if "not_computed" in image:
        return [f"Not computed: {image['not_computed']}."]
    lines = []
    for fam, f in image.items():
        few = [t for t, v in f["types"].items() if v["few_items"]]
        lines += [f"### {fam} ({f['classes']} classes; prediction: {f['prediction']})", "",
                  "| skin type | n | accuracy [95% CI] | balanced accuracy [95% CI] | macro-F1 [95% CI] | "
                  "accuracy blind |", "|---|---|---|---|---|---|"]
        for t, v in f["types"].items():
            bl = blind.get(fam, {}).get("types", {}).get(t, {}).get("accuracy")
            lines.append(f"| {t}{' (few)' if v['few_items'] else ''} | {v['n']} | "
                         + " | ".join(fmt(v[k]) for k in SKIN_TYPE_FIGURES) + f" | {fmt(bl)} |")
        gaps = []
        for k, g in f["gap"].items():
            gaps.append(f"{k} {g['gap']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] ({g['best']} − {g['worst']})"
                        if "gap" in g else f"{k} not computed ({g['not_computed']})")
        lines += ["", "Gap best − worst type: " + "; ".join(gaps) + "."]
        if few:
            lines.append(f"(few): fewer than {min_n} items, shown but left out of the gap: {', '.join(few)}.")
        lines.append("")
    return lines


def render(m: dict, info: dict, figures: list[tuple[str, str]]) -> str:
    b, st = m["benchmark"], m["settings"]
    miss = b["missing_images"]
    lines = [f"# Evaluation: {st['model']} on `{b['spec']}`", "",
             f"Mode {st['mode']}, {st['decoding']} decoding, max {st['max_new_tokens']} new tokens. "
             f"Items: {b['items_in_benchmark']} in the benchmark, {b['items_selected']} selected, "
             f"{b['items_scored']} scored, {miss['count']} with missing or unreadable images.", ""]
    if st.get("likelihood_scoring"):
        lines += [f"Likelihood mode: {st['likelihood_scoring']}.", ""]
    if b["loader_skipped"]:
        lines += ["Left out by the loader: " + ", ".join(f"{k}: {v}" for k, v in b["loader_skipped"].items()), ""]
    if b["loader"]:
        lines += ["Loader: " + "; ".join(f"{k} {v}" for k, v in b["loader"].items()), ""]
    if miss["count"]:
        listed = list(miss["ids"].items())[:MAX_LISTED_MISSING]
        lines += ["## Missing images", ""] + [f"- `{i}`: {r}" for i, r in listed]
        if miss["count"] > MAX_LISTED_MISSING:
            lines.append(f"- … {miss['count'] - MAX_LISTED_MISSING} more, all listed in metrics.json")
        lines.append("")
    lines += ["## Overall", "", *overall_table(m), "",
              "Scores are means of per-item scores in [0, 1]; BLEU is sentence-level sacrebleu (lowercased, "
              "exponential smoothing); intervals are percentile bootstrap over items.", "",
              unparsed_line(m), ""]
    if "answer_failures" in m:
        details = [f"- {line}" for line in failure_detail_lines(m)]
        lines += [failure_line(m["answer_failures"]), "", *details, *([""] if details else [])]
    if "judge" in m:
        lines += [judge_line(m["judge"]), ""]
    classes = classification_lines(m["classification"])
    if classes:
        lines += ["## Classifier metrics", "", *classes, ""]
    for dim, strata in m["strata"].items():
        lines += [f"## By {dim.replace('_', ' ')}", "", *strata_table(strata), ""]
    gaps = gap_lines(m["fitzpatrick_gap"])
    if gaps:
        lines += ["## Skin-type gap (best − worst Fitzpatrick type)", "", *gaps, ""]
    if "skin_type" in m:
        lines += ["## Classification by skin type", "",
                  *skin_type_lines(m["skin_type"], m["bootstrap"]["gap_min_items_per_type"])]
    cal = m["calibration"]["image"]
    lines += ["## Calibration", "",
              f"Expected calibration error {cal['ece']:.4f} over {cal['n']} likelihood-scored questions."
              if "ece" in cal else f"Not computed: {cal['not_computed']}.", ""]
    if m["not_computed"]:
        lines += ["## Not computed", "", *[f"- {k}: {v}" for k, v in m["not_computed"].items()], ""]
    if figures:
        lines += ["## Plots", ""] + [f"![{cap}]({name})" for name, cap in figures] + [""]
    if "manifest" in m:
        lines += ["## Manifest", "", *manifest_lines(m["manifest"]), ""]
    lines += ["## Run", "",
              f"Answered now: {info['answered_now']} (failed rows asked again: {info.get('retried_failures', 0)}), "
              f"resumed from answers.jsonl: {info['resumed']}, "
              f"device {info['device'] or '–'} ({info['dtype'] or '–'}), batch size {info['batch_size']}, "
              "answering "
              f"{info['answer_seconds']} s ({info['questions_per_second'] or '–'} questions/s), "
              f"total {info['total_seconds']} s.", ""]
    return "\n".join(lines)


def write_report(out: Path, metrics: dict, info: dict, plots: bool = True) -> None:
    figures = []
    if plots:
        from dermvqa.eval.plots import plot_confusions, plot_reliability, plot_strata
        figures += plot_strata(out, metrics, HEADLINE)
        figures += plot_reliability(out, metrics["calibration"]["image"])
        figures += plot_confusions(out, metrics["confusion"]["image"])
    write_text_atomic(Path(out) / "report.md", render(metrics, info, figures))
