"""`dermvqa eval compare` on three runs whose answers are written with known disagreements (no model): the
paired bootstrap intervals and McNemar p-values equal a direct computation here, mismatched benchmark files
are refused, and the shared item count is reported when the item sets differ."""
import hashlib
import json
import random
import zlib
from math import comb

import numpy as np
import pytest
from typer.testing import CliRunner

from dermvqa.cli import app
from dermvqa.eval.answers import AnswerLog
from dermvqa.eval.compare import compare
from dermvqa.eval.paired import mcnemar_exact
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.summary import build_metrics
from tests.eval.conftest import DX, make_world

N_BOOT = 200


def world_sha256(world):
    h = hashlib.sha256()
    for p in sorted((world / "qa").rglob("*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()


def write_run(out, world, replies: dict, sha256: str | None = "same", max_new_tokens: int = 8):
    """A run folder as the runner leaves it: run.json, answers.jsonl (with blind twins), metrics.json."""
    spec = f"qa:{world}"
    bench = load_bench(spec)
    chosen = [it for it in bench.items if it.id in replies or it.id == "gone"]
    items = [it for it in chosen if all(p.is_file() for p in it.images)]
    missing = {it.id: "not found" for it in chosen if it not in items}
    settings = {"model": f"llava:{out.name}", "bench": spec, "mode": "generate", "max_new_tokens": max_new_tokens,
                "likelihood_reduce": "sum", "decoding": "greedy"}
    out.mkdir(parents=True)
    log = AnswerLog(out, settings)
    log.append([{"id": it.id, "blind": False, "reply": replies[it.id]} for it in items])
    log.append([{"id": it.id, "blind": True, "reply": "no"} for it in items])
    m = build_metrics(bench, items, missing, log, settings, blind=True, n_boot=50)
    if sha256:
        m["manifest"] = {"benchmark": {"sha256": world_sha256(world) if sha256 == "same" else sha256}}
    (out / "metrics.json").write_text(json.dumps(m))
    return out


def gold_and_wrong(item_id: str) -> tuple[str, str]:
    """The right and a wrong reply for an item of make_world (yes/no gold yes; choice and diagnosis gold DX[i%4])."""
    i = int(item_id[2:])
    if item_id.startswith("yn"):
        return "yes", "no"
    return DX[i % 4], DX[(i + 1) % 4]


def make_replies(ids, seed: int, p_right: float) -> tuple[dict, dict]:
    """Replies and, independently of any scorer, whether each is right (a few commit to nothing: wrong)."""
    rng, replies, right = random.Random(seed), {}, {}
    for i in ids:
        gold, wrong = gold_and_wrong(i)
        roll = rng.random()
        replies[i] = gold if roll < p_right else ("I am not sure." if roll > 0.9 else wrong)
        right[i] = float(roll < p_right)
    return replies, right


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    world = make_world(root / "world")
    ids = [f"{k}{i}" for i in range(12) for k in ("yn", "mc", "dx")]
    truth = {}
    paths = {}
    for name, seed, p_right, keep in (("r0", 1, 0.5, ids), ("r1", 2, 0.8, ids), ("r2", 3, 0.3, ids[:24])):
        replies, truth[name] = make_replies(keep, seed, p_right)
        paths[name] = write_run(root / name, world, replies)
    return root, world, paths, truth


def mcnemar_by_hand(b: int, c: int) -> float:
    """Two-sided exact binomial test: sum of the Binomial(b + c, 1/2) probabilities no larger than the observed."""
    n = b + c
    pmf = [comb(n, k) / 2 ** n for k in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[b] * (1 + 1e-12)))


def bootstrap_by_hand(base, other, key):
    base, other = np.array(base), np.array(other)
    rng = np.random.default_rng([0, zlib.crc32(key.encode())])
    idx = rng.integers(0, base.size, size=(N_BOOT, base.size))
    diffs = other[idx].mean(axis=1) - base[idx].mean(axis=1)
    return [np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)]


def test_paired_tests_equal_a_direct_computation(runs, tmp_path):
    root, _, paths, truth = runs
    markdown = compare([paths["r0"], paths["r1"], paths["r2"]], tmp_path / "out", n_boot=N_BOOT)
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert (tmp_path / "out" / "compare.md").read_text() == markdown
    assert (tmp_path / "out" / "compare_forest.png").stat().st_size > 0
    shared = sorted(set(truth["r2"]))                          # r2 answered 24 of the 36 items
    assert result["shared_items"] == 24 and "the 24 items all runs share" in markdown
    discordant = []
    for other in ("r1", "r2"):
        for stratum, keep in (("all", lambda i: True), ("1", lambda i: int(i[2:]) % 3 == 0)):
            closed = [i for i in shared if not i.startswith("dx") and keep(i)]
            base, oth = [truth["r0"][i] for i in closed], [truth[other][i] for i in closed]
            dim = "overall" if stratum == "all" else "fitzpatrick"
            row = next(p for p in result["paired"] if p["run"] == str(paths[other]) and p["dimension"] == dim
                       and p["stratum"] == stratum and p["metric"] == "accuracy")
            b = sum(1 for x, y in zip(base, oth) if x == 1 and y == 0)
            c = sum(1 for x, y in zip(base, oth) if x == 0 and y == 1)
            assert row["n"] == len(closed) and row["diff"] == pytest.approx(np.mean(oth) - np.mean(base))
            assert (row["mcnemar"]["baseline_only_right"], row["mcnemar"]["other_only_right"]) == (b, c)
            assert row["mcnemar"]["p"] == pytest.approx(mcnemar_by_hand(b, c), rel=1e-12)
            assert row["ci"] == pytest.approx(bootstrap_by_hand(base, oth, f"paired/{dim}/{stratum}/accuracy"),
                                              abs=1e-12)
            discordant.append(b + c)
    assert len(discordant) == 4 and min(discordant) > 0          # every checked test has pairs to count
    dims = {p["dimension"] for p in result["paired"]}
    assert dims == {"overall", "fitzpatrick", "source", "family"}
    board = {b["run"]: b for b in result["leaderboard"]}
    m2 = json.loads((paths["r2"] / "metrics.json").read_text())
    assert board[str(paths["r2"])]["image"]["accuracy"] == m2["overall"]["image"]["accuracy"]
    assert board[str(paths["r2"])]["blind"]["accuracy"] == m2["overall"]["blind"]["accuracy"]
    assert "Benchmark files identical" in markdown


def test_mismatched_benchmark_files_are_refused(runs, tmp_path):
    root, world, paths, _ = runs
    other = write_run(tmp_path / "other", world, {"yn0": "yes", "mc0": "psoriasis"}, sha256="0" * 64)
    with pytest.raises(ValueError, match="different benchmark files"):
        compare([paths["r0"], other])


def test_runs_without_manifest_fall_back_to_the_spec(runs, tmp_path):
    root, world, paths, _ = runs
    old = write_run(tmp_path / "old", world, {i: "yes" for i in ("yn0", "yn1", "mc0")}, sha256=None)
    markdown = compare([paths["r0"], old], n_boot=N_BOOT)
    assert "compared by its spec only" in markdown and "3 items all runs share" in markdown
    elsewhere = make_world(tmp_path / "world2")
    moved = write_run(tmp_path / "moved", elsewhere, {"yn0": "yes"}, sha256=None)
    with pytest.raises(ValueError, match="different benchmarks"):
        compare([old, moved])


def test_answers_that_no_longer_rescore_to_metrics_json_are_refused(runs, tmp_path):
    root, world, paths, _ = runs
    run = write_run(tmp_path / "edited", world, {i: "yes" for i in ("yn0", "yn1")})
    m = json.loads((run / "metrics.json").read_text())
    m["overall"]["image"]["accuracy"]["value"] = 0.5
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="rescore to accuracy 1.000000"):
        compare([paths["r0"], run])


def test_cli_takes_k_runs_and_a_baseline(runs, tmp_path, capsys):
    _, _, paths, _ = runs
    args = ["eval", "compare", *(str(paths[n]) for n in ("r0", "r1", "r2")), "--baseline", str(paths["r1"]),
            "--out", str(tmp_path / "cli")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"## Paired against the baseline {paths['r1']}" in result.output
    assert json.loads((tmp_path / "cli" / "compare.json").read_text())["baseline"] == str(paths["r1"])
    assert app.run(["eval", "compare", str(paths["r0"]), str(paths["r1"]), "--baseline", "nope"]) == 2
    assert f"error: --baseline nope is not one of the runs ({paths['r0']}" in capsys.readouterr().err


def test_baseline_given_as_another_spelling_of_a_listed_run(runs, monkeypatch):
    root, _, paths, _ = runs
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["eval", "compare", "r0", "r1", "--baseline", str(paths["r1"].resolve())])
    assert result.exit_code == 0, result.output
    assert "## Paired against the baseline r1 (" in result.stdout     # named as listed


def test_leaderboard_shows_max_new_tokens_and_compare_errors_are_one_line(runs, tmp_path, capsys):
    root, world, paths, _ = runs
    longer = write_run(tmp_path / "long", world, {"yn0": "yes", "mc0": "psoriasis"}, max_new_tokens=256)
    markdown = compare([paths["r0"], longer], n_boot=N_BOOT)
    assert "| run | model | mode | max new tokens | n |" in markdown
    board = markdown.split("## Leaderboard")[1].split("## Paired")[0]
    cells = [line.split(" | ") for line in board.splitlines() if line.startswith("| /")]
    assert [(c[0][2:], c[3]) for c in cells] == [(str(paths["r0"]), "8"), (str(longer), "256")]
    other = write_run(tmp_path / "other", world, {"yn0": "yes"}, sha256="0" * 64)
    assert app.run(["eval", "compare", str(paths["r0"]), str(other)]) == 2  # the real entry point's error line
    assert capsys.readouterr().err.startswith("error: the runs use different benchmark files")


def test_mcnemar_edge_cases_by_hand():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0          # no evidence either way
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2 ** 10)       # 0.0215: P(X <= 1), X ~ Bin(10, 1/2)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32) == mcnemar_by_hand(0, 5)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
