"""Data-parallel eval: shards merged = the one-process run, byte for byte; bad shard sets refused."""
import json
import re

import pytest
from typer.testing import CliRunner

from dermvqa.cli import app
from dermvqa.eval import run_eval
from dermvqa.eval.runner import merge_shards
from dermvqa.eval.shard import parse_shard, select

FAST = {"max_new_tokens": 6, "n_boot": 30, "plots": False}


def without_run_section(report: str) -> str:
    """report.md minus its last section (timing: answered now, seconds), which differs between any two runs."""
    return report[:report.index("## Run")]


def test_parse_and_select(monkeypatch):
    assert parse_shard("2/3") == (2, 3) and parse_shard("1/1") == (1, 1)
    for bad in ("0/3", "4/3", "2", "a/b", "2/0"):
        with pytest.raises(ValueError, match="expected I/N"):
            parse_shard(bad)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK and WORLD_SIZE are not set"):
        parse_shard("auto")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_shard("auto") == (3, 4)
    items = list("abcdefghij")
    for n in (1, 3, 4):
        parts = [select(items, (i, n)) for i in range(1, n + 1)]
        assert parts == [[x for pos, x in enumerate(items) if pos % n == i - 1] for i in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == items


def run_sharded(model_dir, spec, tmp_path, mode, n):
    """(one-process run folder, merged folder of n shards answered with another batch size)."""
    one = tmp_path / "one"
    run_eval(model_dir, spec, one, batch_size=4, mode=mode, **FAST)
    shard_dirs = [tmp_path / f"s{i}" for i in range(1, n + 1)]
    for i, d in enumerate(shard_dirs, start=1):
        info = run_eval(model_dir, spec, d, batch_size=3, mode=mode, shard=(i, n), **FAST)
        assert info["answered_now"] > 0 and not (d / "metrics.json").exists()
    merge_shards(tmp_path / "merged", list(reversed(shard_dirs)), plots=False)
    return one, tmp_path / "merged"


def test_merged_shards_equal_one_process_run(varied_model_dir, qa_world, tmp_path):
    one, merged = run_sharded(varied_model_dir, f"qa:{qa_world}", tmp_path, "generate", 2)
    for name in ("answers.jsonl", "metrics.json", "run.json"):
        assert (merged / name).read_bytes() == (one / name).read_bytes(), name
    assert without_run_section((merged / "report.md").read_text()) == without_run_section((one / "report.md").read_text())
    ids = [json.loads(line)["id"] for line in (merged / "answers.jsonl").read_text().splitlines()]
    assert len(ids) == 72 and len(set(ids)) == 36                     # 36 scored items, with image and blind


def test_likelihood_shards_differ_only_by_float_error(varied_model_dir, qa_world, tmp_path):
    """Option probabilities depend on the batch's padding width in the last float32 bits (so a one-process run
    at batch 3 and at batch 4 differ as much): replies, order and reply-based metrics stay identical."""
    one, merged = run_sharded(varied_model_dir, f"qa:{qa_world}", tmp_path, "likelihood", 3)
    a, b = ([json.loads(line) for line in (d / "answers.jsonl").read_text().splitlines()] for d in (one, merged))
    assert [(r["id"], r["blind"], r["reply"]) for r in a] == [(r["id"], r["blind"], r["reply"]) for r in b]
    assert sum("probs" in r for r in b) == 48
    for x, y in zip(a, b):
        assert x.get("probs", []) == pytest.approx(y.get("probs", []), abs=1e-5)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, merged))
    assert ma["overall"] == mb["overall"] and ma["strata"] == mb["strata"] and ma["manifest"] == mb["manifest"]


def test_merge_refuses_incomplete_or_mixed_shards(varied_model_dir, qa_world, tmp_path):
    spec = f"qa:{qa_world}"
    for i in (1, 2):
        run_eval(varied_model_dir, spec, tmp_path / f"s{i}", limit=4, blind=False, shard=(i, 2), **FAST)
    run_eval(varied_model_dir, spec, tmp_path / "other", limit=4, blind=False, shard=(2, 2), max_new_tokens=5,
             n_boot=30, plots=False)
    with pytest.raises(ValueError, match=re.escape("expected shards 1..2 once each, got [1]")):
        merge_shards(tmp_path / "m1", [tmp_path / "s1"])
    with pytest.raises(ValueError, match="differ in settings .*max_new_tokens"):
        merge_shards(tmp_path / "m2", [tmp_path / "s1", tmp_path / "other"])
    with pytest.raises(ValueError, match="another shard or selection"):
        run_eval(varied_model_dir, spec, tmp_path / "s1", limit=4, blind=False, shard=(2, 2), **FAST)
    with pytest.raises(ValueError, match="holds a shard"):
        run_eval(varied_model_dir, spec, tmp_path / "s1", limit=4, blind=False, **FAST)
    lines = (tmp_path / "s2" / "answers.jsonl").read_text().splitlines()
    (tmp_path / "s2" / "answers.jsonl").write_text("\n".join(lines[:-1]) + "\n")   # one answer lost
    with pytest.raises(ValueError, match="answered by 0 shards, expected 1"):
        merge_shards(tmp_path / "m3", [tmp_path / "s1", tmp_path / "s2"])


def test_cli_shard_and_merge(varied_model_dir, qa_world, tmp_path, monkeypatch):
    runner = CliRunner()
    common = ["eval", "--model", str(varied_model_dir), "--bench", f"qa:{qa_world}", "--limit", "5", "--no-blind",
              "--max-new-tokens", "6"]
    result = runner.invoke(app, [*common, "--shard", "1/2", "--out", str(tmp_path / "s1")])
    assert result.exit_code == 0 and "shard 1/2: answered 3" in result.output
    monkeypatch.setenv("RANK", "1")                                # as torchrun sets it for the second process
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, [*common, "--shard", "auto", "--out", str(tmp_path / "auto")])
    assert result.exit_code == 0 and "shard 2/2: answered 2" in result.output
    result = runner.invoke(app, ["eval", "merge", "--out", str(tmp_path / "m"), str(tmp_path / "s1"),
                                 str(tmp_path / "auto" / "shard-2-of-2")])
    assert result.exit_code == 0, result.output
    assert "scored 5 of 5 questions" in result.output and (tmp_path / "m" / "report.md").exists()
    result = runner.invoke(app, [*common, "--shard", "3/2", "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "error: --shard '3/2': expected I/N" in result.output


def test_more_shards_than_items(varied_model_dir, qa_world, tmp_path):
    spec, opts = f"qa:{qa_world}", {"limit": 2, "blind": False, **FAST}
    run_eval(varied_model_dir, spec, tmp_path / "one", **opts)
    for i in (1, 2, 3):
        info = run_eval(varied_model_dir, spec, tmp_path / f"s{i}", shard=(i, 3), **opts)
        assert info["answered_now"] == (0 if i == 3 else 1)
    merge_shards(tmp_path / "m", [tmp_path / f"s{i}" for i in (1, 2, 3)], plots=False)
    for name in ("answers.jsonl", "metrics.json"):
        assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
