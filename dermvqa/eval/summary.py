"""Assemble metrics.json from the benchmark items and the logged answers (no model needed: rescoring is cheap).

Everything here is a pure function of its inputs and the seed, and floats are rounded, so two runs
over the same answers give byte-identical files. Timing lives in run_info.json, never here.
"""
from __future__ import annotations

from collections import Counter

from dermvqa.eval.classify import classifier_metrics
from dermvqa.eval.items import CLOSED, Bench, EvalItem
from dermvqa.eval.metrics import BERTSCORE_REASON, OPEN_METRICS, TextScorer, calibration
from dermvqa.eval.parse import choice_verdict
from dermvqa.eval.skin_types import skin_type_section
from dermvqa.eval.strata import DIMENSIONS, skin_type_gap, stratify, summarize

HEADLINE = ["accuracy", "exact_match", "token_f1", "rougeL"]
UNPARSED = "(unparsed)"


def score_rows(items: list[EvalItem], log, blind: bool, scorer: TextScorer,
               verdicts: dict | None = None) -> tuple[list[dict], list]:
    """Per-item score rows plus (item, picked option, answer row) triples for confusion and calibration;
    `verdicts` {(id, blind): 1|0} adds the judge's verdict as judge_accuracy to the items it judged."""
    rows, picks = [], []
    for it in items:
        ans = log.get(it.id, blind)
        if ans is None:
            raise RuntimeError(f"no {'blind ' if blind else ''}answer logged for item {it.id}")
        scores, pick = scorer.score(it, ans["reply"])
        if (it.id, blind) in (verdicts or {}):
            scores["judge_accuracy"] = float(verdicts[it.id, blind])
        rows.append({"id": it.id, "family": it.family, "source": it.source, "group": it.group,
                     "fitzpatrick": it.fitzpatrick, "lang": it.lang, "scores": scores})
        picks.append((it, pick, ans))
    return rows, picks


def unparsed_reasons(picks: list) -> dict[str, int]:
    """{reason: count} over the closed replies with options that commit to none of them; an answer that failed
    (HTTP error, empty, refused ...) is counted as `answer_failed`, whatever its reply text."""
    found = Counter("answer_failed" if "failure" in ans else choice_verdict(ans["reply"], it.options)[1]
                    for it, pick, ans in picks if it.answer_type == CLOSED and it.options and pick is None)
    return dict(sorted(found.items()))


def classifier_families(picks: list) -> dict[str, tuple[list[str], list]]:
    """{family: (labels, picks)} for each family whose closed items all share one option set (a classifier)."""
    by_family: dict[str, list] = {}
    for triple in picks:
        if triple[0].answer_type == CLOSED and triple[0].options:
            by_family.setdefault(triple[0].family, []).append(triple)
    return {fam: (group[0][0].options, group) for fam, group in sorted(by_family.items())
            if all(sorted(it.options) == sorted(group[0][0].options) for it, _, _ in group)}


def confusion(picks: list) -> dict:
    """Gold x predicted counts per classifier family."""
    out = {}
    for fam, (labels, group) in classifier_families(picks).items():
        col = {lab: i for i, lab in enumerate(labels)}
        matrix = [[0] * (len(labels) + 1) for _ in labels]
        for it, pick, _ in group:
            matrix[col[it.gold]][len(labels) if pick is None else col[it.options[pick]]] += 1
        out[fam] = {"labels": labels, "columns": labels + [UNPARSED], "matrix": matrix}
    return out


def classification(picks: list, key: str, n_boot: int, seed: int) -> dict:
    """Balanced accuracy, macro-F1 and (with option probabilities) AUC and likelihood accuracy per classifier
    family, in the family's label order."""
    out = {}
    for fam, (labels, group) in classifier_families(picks).items():
        col = {lab: i for i, lab in enumerate(labels)}
        gold = [col[it.gold] for it, _, _ in group]
        pred = [None if pick is None else col[it.options[pick]] for it, pick, _ in group]
        probs = None
        if all("probs" in ans for _, _, ans in group):
            probs = [[ans["probs"][it.options.index(lab)] for lab in labels] for it, _, ans in group]
        out[fam] = classifier_metrics(labels, gold, pred, probs, f"{key}/{fam}", n_boot, seed)
    return out


def calibration_of(picks: list) -> dict:
    conf = [max(ans["probs"]) for it, _, ans in picks if "probs" in ans]
    if not conf:
        return {"not_computed": "confidences come from option likelihoods: run with --mode likelihood"}
    correct = [float(pick == it.answer_index) for it, pick, ans in picks if "probs" in ans]
    return calibration(conf, correct)


def _round(x, nd: int = 6):
    if isinstance(x, float):
        return round(x, nd) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v, nd) for v in x]
    return x


def _merge(image: dict, blind: dict | None) -> dict:
    """{dim: {stratum: {"image": s, "blind": s}}} from two {dim: {stratum: s}} trees."""
    return {dim: {name: {"image": s, **({"blind": blind[dim][name]} if blind else {})}
                  for name, s in strata.items()} for dim, strata in image.items()}


def headline(overall: dict) -> dict:
    """Flat top-level figures for quick reading: closed_accuracy, open_exact_match and their blind_ twins."""
    out = {}
    for run, prefix in (("image", ""), ("blind", "blind_")):
        for metric, name in (("accuracy", "closed_accuracy"), ("exact_match", "open_exact_match")):
            if metric in overall.get(run, {}):
                out[prefix + name] = overall[run][metric]["value"]
    return out


def build_metrics(bench: Bench, items: list[EvalItem], missing: dict[str, str], log, settings: dict,
                  blind: bool, n_boot: int = 1000, seed: int = 0, gap_min_n: int = 10,
                  verdicts: dict | None = None) -> dict:
    """The full metrics tree for the scored items (those with all images present)."""
    scorer = TextScorer()
    runs = {"image": score_rows(items, log, False, scorer, verdicts)}
    if blind:
        runs["blind"] = score_rows(items, log, True, scorer, verdicts)
    overall, strata, gaps, calib, confusions, classes, unparsed = {}, {}, {}, {}, {}, {}, {}
    skin = {}
    for name, (rows, picks) in runs.items():
        overall[name] = summarize(rows, f"{name}/overall", n_boot, seed) if rows else {}
        strata[name] = stratify(rows, n_boot, seed, prefix=f"{name}/")
        present = {m for r in rows for m in r["scores"]}
        gaps[name] = skin_type_gap(rows, [m for m in HEADLINE if m in present], n_boot, seed, gap_min_n,
                                   prefix=f"{name}/")
        calib[name] = calibration_of(picks)
        confusions[name] = confusion(picks)
        classes[name] = classification(picks, name, n_boot, seed)
        skin[name] = skin_type_section(classifier_families(picks), picks, name, n_boot, seed, gap_min_n)
        unparsed[name] = unparsed_reasons(picks)
    not_computed = {"bertscore": BERTSCORE_REASON}
    if scorer.meteor_missing and any(it.answer_type != CLOSED for it in items):
        not_computed["meteor"] = scorer.meteor_missing
    metrics = {
        **headline(overall),
        "benchmark": {"spec": bench.spec, "kind": bench.kind,
                      "items_in_benchmark": bench.info.get("items_in_split", len(bench.items)),
                      "items_selected": len(items) + len(missing), "items_scored": len(items),
                      "loader_skipped": bench.skipped, "loader": bench.info,
                      "missing_images": {"count": len(missing), "ids": dict(sorted(missing.items()))}},
        "settings": settings,
        "metric_names": {"closed": ["accuracy", "llava_med_closed"], "open": OPEN_METRICS},
        "overall": overall,
        "strata": _merge(strata["image"], strata.get("blind")),
        "strata_dimensions": [d for d in DIMENSIONS if d in strata["image"]],
        "fitzpatrick_gap": gaps,
        "calibration": calib,
        "confusion": confusions,
        "classification": classes,
        "skin_type": skin,
        "unparsed_closed_replies": {name: sum(r.values()) for name, r in unparsed.items()},
        "unparsed_reasons": unparsed,
        "not_computed": not_computed,
        "bootstrap": {"resamples": n_boot, "seed": seed, "interval": "percentile 95%",
                      "gap_min_items_per_type": gap_min_n},
    }
    return _round(metrics)
