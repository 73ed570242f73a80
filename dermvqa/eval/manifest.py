"""The run manifest (metrics.json's "manifest", a section of report.md): what a run's numbers came from.

The adapter's own manifest (model path and weight sha256s, or hub id and revision, or endpoint and served
model; the prompt template), the decoding settings, the benchmark's files by sha256 with its item count,
and the library versions. Nothing in it changes between two runs of the same inputs (no timestamps, no
timings), so metrics.json stays byte-identical. `compare` refuses runs whose benchmark sha256 differ.

Benchmark sha256: one sha256 over the bytes of the benchmark's data files, read in sorted path order:
for `qa:DIR` every *.parquet under DIR/qa (or DIR), for `ham10000:DIR` its metadata and split CSVs, for
the other kinds the one file the spec names.
"""
from __future__ import annotations

import json
import platform
from collections import Counter
from pathlib import Path

from atomic_files import write_text_atomic
from dermvqa.eval.items import Bench, parse_spec
from dermvqa.model.folder import files_sha256

ADAPTER_FILE = "adapter_manifest.json"
HAM10000_FILES = ("HAM10000_metadata.csv", "dermamnist_split.csv")


def benchmark_files(spec: str) -> list[Path]:
    """The data files a bench SPEC reads, in the order they are hashed."""
    s = parse_spec(spec)
    if s.path.is_file():
        return [s.path]
    if s.kind == "qa":
        qa_dir = s.path / "qa" if (s.path / "qa").is_dir() else s.path
        return sorted(qa_dir.rglob("*.parquet"))
    if s.kind == "ham10000":
        return sorted(p for p in (s.path / name for name in HAM10000_FILES) if p.is_file())
    raise ValueError(f"bench {spec!r}: {s.path} is a folder; {s.kind}: reads a file")


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def adapter_manifest(out: Path, adapter) -> dict:
    """The loaded adapter's manifest, kept in OUT/adapter_manifest.json for reruns that load no model.
    A rerun whose model no longer matches the one that made the answers (other weights) is refused."""
    fresh = json.loads(json.dumps(adapter.manifest(), sort_keys=True))
    path = out / ADAPTER_FILE
    if path.exists():
        before = json.loads(path.read_text())
        if before != fresh:
            diff = sorted(k for k in set(before) | set(fresh) if before.get(k) != fresh.get(k))
            raise ValueError(f"{out}: the answers there were made by another model ({', '.join(diff)} differ "
                             f"from {path.name}); use a new --out folder")
    else:
        write_text_atomic(path, json.dumps(fresh, indent=2, sort_keys=True) + "\n")
    return fresh


def stored_adapter_manifest(out: Path) -> dict:
    """The manifest of the model that made every answer in OUT, for a rerun that loads no model. Where it names
    weight files in a local folder (llava:, hf: folders) they are hashed again: a model retrained or replaced at
    the same path is refused, as adapter_manifest refuses it when the rerun loads the model."""
    path = out / ADAPTER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run's model manifest is missing")
    stored = json.loads(path.read_text())
    key = next((k for k in ("weights_sha256", "weights") if isinstance(stored.get(k), dict)), None)
    folder = Path(stored.get("path", ""))
    if key and stored.get("path") and folder.is_dir():
        changed = [name for name, sha in sorted(stored[key].items())
                   if not (folder / name).is_file() or files_sha256([folder / name]) != sha]
        if changed:
            raise ValueError(f"{out}: the answers there were made by another model ({key} differ from "
                             f"{path.name}: {', '.join(changed)} in {folder}); use a new --out folder")
    return stored


def build_manifest(adapter: dict, settings: dict, bench: Bench) -> dict:
    files = benchmark_files(bench.spec)
    return {"adapter": adapter,
            "decoding": {k: settings[k] for k in ("decoding", "mode", "max_new_tokens", "likelihood_reduce")},
            "benchmark": {"spec": bench.spec, "files": [str(p) for p in files], "sha256": files_sha256(files),
                          "items": bench.info.get("items_in_split", len(bench.items))},
            "libraries": library_versions()}


def row_counts(items, log, blind: bool, field: str) -> dict[str, dict[str, int]]:
    """{"image": {value: n}, "blind": {...}}: the answer rows carrying `field`, by its value."""
    runs = ("image", "blind") if blind else ("image",)
    return {run: dict(sorted(Counter(row[field] for it in items
                                     if field in (row := log.get(it.id, run == "blind"))).items()))
            for run in runs}


def failure_counts(items, log, blind: bool) -> dict[str, dict[str, int]]:
    """{"image": {reason: n}, "blind": {...}}: the answer rows the backend could not answer, by reason."""
    return row_counts(items, log, blind, "failure")


def failure_line(failures: dict) -> str:
    """The answers the backend could not give, by reason per run (they score as wrong)."""
    parts = [f"{run} " + (", ".join(f"{reason} {n}" for reason, n in counts.items()) or "none")
             for run, counts in failures.items()]
    return "Answers the model backend failed to give (scored wrong): " + "; ".join(parts) + "."


def manifest_lines(man: dict) -> list[str]:
    """The run manifest as a list: model, prompt template, decoding, benchmark files, libraries."""
    a, b = man["adapter"], man["benchmark"]
    lines = [f"- model: `{a.get('spec', '')}` ({a.get('kind', '')})"]
    for name, sha in sorted(a.get("weights_sha256", {}).items()):
        lines.append(f"  - `{name}` sha256 {sha}")
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in sorted(a.items())
              if k not in ("spec", "kind", "weights_sha256") and not isinstance(v, dict)]
    lines += [f"- {k.replace('_', ' ')}: " + ", ".join(f"{kk} {vv}" for kk, vv in sorted(v.items()))
              for k, v in sorted(a.items()) if isinstance(v, dict) and k != "weights_sha256"]
    lines += ["- decoding: " + ", ".join(f"{k} {v}" for k, v in man["decoding"].items()),
              f"- benchmark `{b['spec']}`: {b['items']} items, sha256 {b['sha256']} over "
              + ", ".join(f"`{f}`" for f in b["files"]),
              "- libraries: " + ", ".join(f"{k} {v}" for k, v in man["libraries"].items())]
    return lines
