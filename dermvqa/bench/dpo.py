"""Stage 3 against stage 2: one table comparing a quickstart's stage-2 model with the same model after DPO.

    python -m dermvqa.bench.dpo --run runs/quickstart --dataset synthetic --out runs/bench_dpo_synthetic
    python -m dermvqa.bench.dpo --run runs/ham10000 --dataset ham10000 --limit 600 --out runs/bench_dpo_ham

RUN: a finished `dermvqa quickstart` (QA in RUN/world/qa or RUN/data/qa, model RUN/train/model, its recipe
RUN/train/recipe.yaml: seed, ham10000 images). Steps, each reusing its output: (1) OUT/pairs.jsonl from the train split
(`dermvqa data export-preference`); (2) DPO with configs/{tiny,ham10000}_cpu_dpo.yaml through run_dpo (what `dermvqa
train` runs) into OUT/dpo, stage-2 seed, --max-steps as train.max_steps (default: the recipe's), timed; a finished
OUT/dpo/model is reused, a stopped one resumes; (3) merged into OUT/dpo_export (`dermvqa export`, float32 like stage
2); both models on the same test items (--limit: the first N) into OUT/eval/{stage2,dpo}_{generate,likelihood}, generate
with the blind control (blank image), likelihood for option probabilities; (4) the table, printed and written with all
figures to OUT/bench_dpo.md / .json; OUT/eval/compare_generate holds `dermvqa eval compare`'s full report.
The figures, and how each is computed: dermvqa/bench/dpo_figures.py.
Verdict "keep DPO as default: yes" only if melanoma recall rises or the sibling share falls (paired interval excludes
0 that way) and closed accuracy does not drop (its paired interval is not wholly below 0).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

from atomic_files import write_text_atomic
from data_gen.preference import export_preference, report_path
from data_gen.records import read_records
from dermvqa.bench.dpo_figures import MODELS, eval_figures, own_figures
from dermvqa.eval.compare import StoredAnswers
from dermvqa.train.recipe import load_recipe

QA_ROOT = {"synthetic": "world", "ham10000": "data"}
RECIPES = {"synthetic": "tiny_cpu_dpo", "ham10000": "ham10000_cpu_dpo"}  # shipped recipes (dermvqa.configs)
MODES = ("generate", "likelihood")
ROWS = [("closed_accuracy", "closed accuracy", 1), ("open_exact_match", "open exact match", 1),
        ("balanced_accuracy", "diagnosis balanced accuracy", 1), ("melanoma_recall", "melanoma recall", 1),
        ("sibling_share", "sibling share of wrong diagnoses", -1), ("ece", "ECE (likelihood)", -1),
        ("brier", "Brier (likelihood)", -1), ("blind_closed_accuracy", "blind closed accuracy", 0)]


def layout(run: Path, dataset: str) -> dict:
    """Where a quickstart run keeps its stage-2 model, QA, images and seed; the bench spec its eval used."""
    if not run.is_dir():
        raise FileNotFoundError(f"--run {run}: no such folder (give a finished `dermvqa quickstart --dataset "
                                f"{dataset}` output folder)")
    model, qa_root = run / "train" / "model", run / QA_ROOT[dataset]
    recipe = next((p for p in (run / "train" / "recipe.yaml", model / "recipe.yaml") if p.is_file()), None)
    if not (model / "config.json").is_file() or recipe is None or not (qa_root / "qa").is_dir():
        raise FileNotFoundError(f"--run {run}: needs train/model/config.json, train/recipe.yaml and "
                                f"{QA_ROOT[dataset]}/qa (a finished {dataset} quickstart)")
    stage2 = load_recipe(recipe)
    images = qa_root / "images" if dataset == "synthetic" else Path(stage2["data"]["image_root"])
    if not images.is_dir():
        raise FileNotFoundError(f"{recipe}: image folder {images} not found (run where the quickstart ran)")
    spec = f"qa:{qa_root}:test" + ("" if dataset == "synthetic" else f":root={images}")  # as the quickstart's eval
    return {"model": model, "qa": qa_root / "qa", "images": images, "spec": spec, "seed": int(stage2["train"]["seed"])}


def export_pairs(lay: dict, out: Path) -> dict:
    """OUT/pairs.jsonl and its counts report (made again, deterministically, when either is missing)."""
    pairs = out / "pairs.jsonl"
    if pairs.is_file() and report_path(pairs).is_file():
        return json.loads(report_path(pairs).read_text(encoding="utf-8"))
    return export_preference(lay["qa"], pairs)


def train_dpo(lay: dict, dataset: str, out: Path, max_steps: int | None,
              overrides: list[str] = ()) -> tuple[Path, float | None, bool]:
    """(OUT/dpo/model, wall seconds of its training (of the last part, when resumed), reused?)."""
    from dermvqa.train.checkpoints import latest_complete
    from dermvqa.train.dpo import run_dpo  # torch, TRL: imported only to train

    run, final, timing = out / "dpo", out / "dpo" / "model", out / "dpo" / "bench_dpo_seconds.json"
    recipe = load_recipe(RECIPES[dataset], [f"model.path={lay['model']}", f"data.pairs={out / 'pairs.jsonl'}",
                                            f"data.image_root={lay['images']}", f"train.output_dir={run}",
                                            f"train.seed={lay['seed']}", *overrides]
                         + ([f"train.max_steps={max_steps}"] if max_steps is not None else []))
    if (final / "adapter_config.json").is_file():
        used = yaml.safe_load((final / "recipe.yaml").read_text())["train"]
        if (used["max_steps"], used["seed"]) != (recipe["train"]["max_steps"], recipe["train"]["seed"]):
            raise ValueError(f"{final} was trained with max_steps {used['max_steps']}, seed {used['seed']}; asked "
                             f"{recipe['train']['max_steps']}, {recipe['train']['seed']}: use another --out")
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        return final, seconds, True
    resume = latest_complete(run / "checkpoints", set_aside=False) is not None
    t0 = time.perf_counter()
    final = run_dpo(recipe, resume=resume)
    seconds = round(time.perf_counter() - t0, 1)
    write_text_atomic(timing, json.dumps({"seconds": seconds, "resumed": resume}) + "\n")
    return final, seconds, False


def verdict(figs: dict) -> tuple[bool, str]:
    mel, sib, acc = (figs[k]["paired"] for k in ("melanoma_recall", "sibling_share", "closed_accuracy"))
    better = [name for name, ok in (("melanoma recall up", mel and mel["ci"][0] > 0),
                                    ("sibling share down", sib and sib["ci"][1] < 0)) if ok]
    acc_ok = acc is not None and acc["ci"][1] >= 0
    why = (", ".join(better) or "neither melanoma recall nor sibling share improves beyond its interval") + \
          ("; closed accuracy holds" if acc_ok else "; closed accuracy drops beyond its paired interval")
    return bool(better) and acc_ok, why


def _cell(s: dict | None, sign: str = "") -> str:
    if not s:
        return "–"
    v = s.get("value", s.get("diff"))
    return f"{v:{sign}.3f} [{s['ci'][0]:{sign}.3f}, {s['ci'][1]:{sign}.3f}]"


def table(figs: dict) -> str:
    lines = ["| figure | better | n | stage 2 [95% CI] | stage 2 + DPO [95% CI] | DPO − stage 2 [95% CI] | "
             "McNemar: stage 2 only / DPO only right, p |", "|---|---|---|---|---|---|---|"]
    for key, name, good in ROWS:
        f = figs[key]
        p, n = f["paired"], "/".join(str(f[m]["n"]) if f[m] else "0" for m in MODELS)
        mc = (p or {}).get("mcnemar")
        test = f"{mc['baseline_only_right']} / {mc['other_only_right']}, p={mc['p']:.3g}" if mc else "–"
        lines.append(f"| {name} | { {1: '↑', -1: '↓', 0: '–'}[good]} | {n} | {_cell(f['stage2'])} | "
                     f"{_cell(f['dpo'])} | {_cell(p, '+')} | {test} |")
    return "\n".join(lines)


def run(args, lay: dict) -> dict:
    from dermvqa.eval.runner import run_eval
    from dermvqa.train.export import export

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] preference pairs from {lay['qa']} (train split) -> {args.out / 'pairs.jsonl'}")
    pairs = export_pairs(lay, args.out)
    print(f"  {pairs['pairs']} pairs by rule: {json.dumps(pairs['by_rule'])}")
    print(f"[2/4] DPO on {lay['model']} (seed {lay['seed']}, max_steps {args.max_steps or 'recipe'})")
    adapter, seconds, reused = train_dpo(lay, args.dataset, args.out, args.max_steps, args.set)
    print(f"  {'reused' if reused else 'trained'} {adapter}: {seconds if seconds is not None else '?'} wall seconds")
    merged = args.out / "dpo_export"
    for stale in [] if reused else [merged, *(args.out / "eval").glob("dpo_*"), args.out / "eval" / "compare_generate"]:
        if stale.exists():  # made from an earlier DPO model: its answers would be reused as this one's
            print(f"  removing {stale} (made from an earlier DPO model)")
            shutil.rmtree(stale)
    if not (merged / "config.json").is_file():
        export(adapter, merged, "float32")
    models, runs = {"stage2": lay["model"], "dpo": merged}, {}
    print(f"[3/4] eval of both models on {lay['spec']} (limit {args.limit or 'none'})")
    for name, model in models.items():
        for mode in MODES:
            runs[f"{name}_{mode}"] = args.out / "eval" / f"{name}_{mode}"
            print(f"  {name}, {mode} mode -> {runs[f'{name}_{mode}']}")
            run_eval(f"llava:{model}", lay["spec"], runs[f"{name}_{mode}"], batch_size=args.batch_size,
                     limit=args.limit, blind=mode == "generate", mode=mode, n_boot=args.n_boot, seed=args.boot_seed,
                     plots=False)
    print("[4/4] figures")
    answers = {m: {mode: StoredAnswers(runs[f"{m}_{mode}"]).rows for mode in MODES} for m in MODELS}
    figs = {**own_figures(read_records(lay["qa"]), answers, args.n_boot, args.boot_seed),
            **eval_figures(runs, args.out, args.n_boot, args.boot_seed)}
    keep, why = verdict(figs)
    return {"dataset": args.dataset, "run": str(args.run), "bench": lay["spec"], "limit": args.limit,
            "pairs": pairs, "train": {"seconds": seconds, "reused": reused, "seed": lay["seed"],
                                      "max_steps": args.max_steps, "overrides": args.set, "adapter": str(adapter)},
            "models": {k: str(v) for k, v in models.items()}, "eval": {k: str(v) for k, v in runs.items()},
            "bootstrap": {"resamples": args.n_boot, "seed": args.boot_seed}, "figures": figs,
            "verdict": {"keep_dpo": keep, "why": why}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `dermvqa quickstart` output folder")
    ap.add_argument("--dataset", choices=tuple(QA_ROOT), required=True)
    ap.add_argument("--max-steps", type=int, help="DPO optimizer steps (default: the recipe's, all epochs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="DPO recipe override, repeatable, e.g. 'train.dpo.loss_type=[sigmoid, sft]'")
    ap.add_argument("--limit", type=int, help="evaluate the first N test items only (default: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="eval batch size")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--boot-seed", type=int, default=0, help="bootstrap seed (DPO uses the stage-2 run's seed)")
    ap.add_argument("--out", type=Path, required=True, help="folder for pairs, DPO run, export, evals, the table")
    args = ap.parse_args(argv)
    try:
        result = run(args, layout(args.run, args.dataset))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t, keep, items = result["train"], result["verdict"], result["figures"]["items"]
    head = (f"{args.dataset}: stage 2 ({result['models']['stage2']}) vs stage 2 + DPO ({t['adapter']}, "
            f"{result['pairs']['pairs']} pairs, {t['seconds']} s of DPO training, seed {t['seed']}) on "
            f"{result['bench']} (limit {args.limit or 'none'}: {items['diagnosis']} diagnosis items, "
            f"{items['melanoma']} melanoma, {items['closed_with_probs']} closed with option probabilities); "
            f"n = stage 2 / DPO items (sibling share: wrong replies naming a diagnosis)")
    markdown = "\n".join([head, "", table(result["figures"]), "",
                          f"keep DPO as default: {'yes' if keep['keep_dpo'] else 'no'} ({keep['why']})"])
    write_text_atomic(args.out / "bench_dpo.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(args.out / "bench_dpo.md", markdown + "\n")
    print("\n" + markdown + f"\n\nAll figures: {args.out / 'bench_dpo.json'}; compare report: "
          f"{args.out / 'eval' / 'compare_generate' / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
