"""One table: the same model folder and the same items through every eval backend, with wall time and metrics.

    python -m dermvqa.bench.adapters --model runs/quickstart/train/model --bench qa:runs/quickstart/qa --limit 200

Rows: `llava:DIR` (dermvqa's own path), `hf:DIR` (the folder loaded as a plain transformers model), and
`openai:` through the OpenAI-compatible API of `dermvqa serve api` (create_app on 127.0.0.1 in this process,
the same batching server the command starts) at each --concurrency. The served app gets no out-of-distribution
summary, as `serve api --no-ood` starts it, so it answers every question (with one, the server would reply with
a notice on flagged photos, blind images included). The openai: rows' blind image is the colour the server lists
in GET /models (the processor mean), as llava:'s, so every row sees the same inputs. Wall time is the whole
run_eval call (loading the model included; the server's own load is outside it; an untimed one-item llava: run
first pays the imports); each run writes into a fresh folder under --out, so no cache is reused.
A backend that fails is a row with its error. `same as llava:` counts answers (with image and blind) equal
to the llava: run's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

FIGURES = ["closed_accuracy", "open_exact_match", "blind_closed_accuracy", "blind_open_exact_match"]


def answers(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    return {(r["id"], r["blind"]): r["reply"] for r in rows}


def run_backend(spec: str, bench: str, out: Path, args, options: dict | None = None) -> dict:
    from dermvqa.eval.runner import run_eval

    t0 = time.perf_counter()
    try:
        m = run_eval(spec, bench, out, batch_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens,
                     plots=False, adapter_options=options)
    except Exception as e:  # noqa: BLE001 - one backend failing is a row of the table, not the end of the bench
        return {"spec": spec, "error": f"{type(e).__name__}: {e}".splitlines()[0][:160]}
    wall = time.perf_counter() - t0
    info = json.loads((out / "run_info.json").read_text())
    token_f1 = m["overall"]["image"].get("token_f1", {}).get("value")
    failures = m.get("answer_failures", {})
    return {"spec": spec, "wall_s": round(wall, 2), "answer_s": info["answer_seconds"],
            "answered": info["answered_now"], "token_f1": token_f1, **{k: m.get(k) for k in FIGURES},
            "failures": failures, "answers": answers(out)}


def served_runs(model_dir: Path, bench: str, root: Path, args) -> list[dict]:
    from dermvqa.infer.generate import load_model
    from dermvqa.serve.api import ServerThread, create_app

    model, processor = load_model(model_dir)
    app = create_app(model, processor, model_dir.resolve().name, max_batch=args.serve_max_batch)  # as --no-ood
    rows = []
    with ServerThread(app) as server:
        for c in args.concurrency:
            spec = f"openai:{model_dir.resolve().name}@{server.url}/v1"
            row = run_backend(spec, bench, root / f"openai_c{c}", args, {"concurrency": c})
            row["spec"] = f"openai: via serve api, concurrency {c}"
            rows.append(row)
    return rows


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], reference: dict | None) -> str:
    head = ["backend", "wall s", "answer s", "questions", "closed acc", "open EM", "token F1", "blind closed",
            "blind open EM", "failures", "same as llava:"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['spec']} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        same = "–" if reference is None else f"{sum(reference.get(k) == v for k, v in r['answers'].items())}/" \
                                             f"{len(reference)}"
        failed = sum(n for by_run in r["failures"].values() for n in by_run.values()) if r["failures"] else 0
        cells = [r["spec"], fmt(r["wall_s"]), fmt(r["answer_s"]), fmt(r["answered"]), fmt(r["closed_accuracy"]),
                 fmt(r["open_exact_match"]), fmt(r["token_f1"]), fmt(r["blind_closed_accuracy"]),
                 fmt(r["blind_open_exact_match"]), str(failed), same]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a dermvqa LLaVA folder (exported)")
    ap.add_argument("--bench", required=True, help="bench SPEC, as for dermvqa eval")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                    help="openai: concurrency levels, comma-separated")
    ap.add_argument("--serve-max-batch", type=int, default=8, help="the API server's batch size (serve api's default)")
    ap.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"error: --model {args.model}: no config.json (a dermvqa LLaVA folder is needed)")
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_adapters_"))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"error: --out {root} is not empty; the bench needs fresh run folders")
    warm = argparse.Namespace(**{**vars(args), "limit": 1})
    run_backend(f"llava:{args.model}", args.bench, root / "warm_up", warm)  # imports and first-call costs, untimed
    rows = [run_backend(f"llava:{args.model}", args.bench, root / "llava", args),
            run_backend(f"hf:{args.model}", args.bench, root / "hf", args)]
    rows += served_runs(args.model, args.bench, root, args)
    reference = rows[0].get("answers")
    print(f"{args.limit} items of {args.bench}, model {args.model}, batch size {args.batch_size}, "
          f"max {args.max_new_tokens} new tokens; run folders in {root}\n")
    print(table(rows, reference))


if __name__ == "__main__":
    main()
