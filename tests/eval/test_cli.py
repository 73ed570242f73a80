"""End to end through the `dermvqa` command: report files, byte-identical reruns, likelihood mode, compare."""
import json
from pathlib import Path

from typer.testing import CliRunner

from dermvqa.cli import app

runner = CliRunner()


def dermvqa(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_eval_help_documents_run_and_compare():
    out = dermvqa("eval", "--help")
    for word in ("--model", "--bench", "--out", "--batch-size", "--limit", "--no-blind", "--mode", "compare"):
        assert word in out


def test_eval_end_to_end(varied_model_dir, qa_world, tmp_path):
    common = ["--model", varied_model_dir, "--bench", f"qa:{qa_world}", "--batch-size", 4, "--max-new-tokens", 6]
    printed = dermvqa("eval", *common, "--out", tmp_path / "a")
    assert "scored 36 of 37 questions (1 with missing images)" in printed
    a = tmp_path / "a"
    for name in ("metrics.json", "answers.jsonl", "report.md", "run.json", "run_info.json", "strata_family.png",
                 "strata_fitzpatrick.png", "strata_source.png", "strata_ontology_group.png",
                 "confusion_yes_no.png", "confusion_multiple_choice.png"):
        assert (a / name).stat().st_size > 0, name
    m = json.loads((a / "metrics.json").read_text())
    assert m["benchmark"]["missing_images"]["ids"] == {"gone": m["benchmark"]["missing_images"]["ids"]["gone"]}
    assert m["overall"]["image"]["accuracy"]["n"] == 24 and m["overall"]["blind"]["exact_match"]["n"] == 12
    assert set(m["strata"]["fitzpatrick"]) == {"1", "2", "3"}
    assert set(m["strata"]["family"]["yes_no"]) == {"image", "blind"}
    assert m["closed_accuracy"] == m["overall"]["image"]["accuracy"]["value"]
    assert m["not_computed"]["bertscore"]
    report = (a / "report.md").read_text()
    assert "`gone`" in report and "## By fitzpatrick" in report and "blind" in report

    dermvqa("eval", *common, "--out", tmp_path / "b")               # a fresh run elsewhere
    assert (tmp_path / "b" / "metrics.json").read_bytes() == (a / "metrics.json").read_bytes()

    dermvqa("eval", *common, "--out", tmp_path / "c", "--mode", "likelihood", "--no-blind")
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert "blind" not in c["overall"] and "ece" in c["calibration"]["image"]
    assert (tmp_path / "c" / "reliability.png").exists()

    table = dermvqa("eval", "compare", a, tmp_path / "c")
    sha = m["manifest"]["benchmark"]["sha256"]
    assert sha == c["manifest"]["benchmark"]["sha256"]
    assert "## Leaderboard" in table and f"Benchmark files identical in every run (sha256 {sha})." in table
    acc_a, acc_c = m["overall"]["image"]["accuracy"]["value"], c["overall"]["image"]["accuracy"]["value"]
    row = next(line for line in table.splitlines() if "| overall | accuracy |" in line)
    assert f"| {acc_c - acc_a:+.3f} [" in row


def test_eval_help_lists_backends_and_their_options():
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "240"})     # wide: no option name cut short
    out = " ".join(result.output.split())
    for word in ("llava:DIR", "hf:ID_OR_DIR", "openai:MODEL@URL", "--api-key-env", "--concurrency",
                 "--trust-remote-code", "--allow-untested-family", "--shard", "merge", "--timeout", "--retries",
                 "--max-tokens-param", "--no-temperature", "--extra-body", "--max-failure-share", "--allow-failures"):
        assert word in out, word


def test_backend_options_are_refused_for_other_backends(qa_world, tmp_path):
    for flags, message in ((["--concurrency", "4"], "--concurrency applies to --model openai:..., not to llava:"),
                           (["--trust-remote-code"], "--trust-remote-code applies to --model hf:..., not to llava:"),
                           (["--retries", "0"], "--retries applies to --model openai:..., not to llava:"),
                           (["--no-temperature"], "--no-temperature applies to --model openai:..., not to llava:")):
        result = runner.invoke(app, ["eval", "--model", str(tmp_path), "--bench", f"qa:{qa_world}", "--out",
                                     str(tmp_path / "out"), *flags])
        assert result.exit_code == 2 and f"error: {message}" in result.output
    result = runner.invoke(app, ["eval", "--model", "vllm:x", "--bench", f"qa:{qa_world}", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown backend 'vllm'" in result.output


def test_eval_needs_model_bench_out(tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(tmp_path)])
    assert result.exit_code != 0 and "missing --bench, --out" in result.output


def test_eval_on_real_ham10000_images(quickstart_sized_model_dir, tmp_path):
    ham = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ham10000"
    common = ["--model", quickstart_sized_model_dir, "--bench", f"ham10000:{ham}", "--batch-size", 8,
              "--max-new-tokens", 6]
    printed = dermvqa("eval", *common, "--limit", 8, "--out", tmp_path / "gen")
    assert "scored 8 of 8 questions (0 with missing images)" in printed
    m = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    b = m["benchmark"]
    assert b["items_in_benchmark"] == 4010 and b["loader"]["items_per_split"] == {"test": 4010, "train": 14014,
                                                                                 "val": 2006}
    assert b["loader_skipped"] == {} and b["loader"]["test_images_whose_lesion_is_in_train"] == 693
    assert set(m["strata"]["family"]) == {"ham10000_choice", "ham10000_diagnosis"}
    assert m["overall"]["image"]["accuracy"]["n"] == 4 and m["overall"]["image"]["exact_match"]["n"] == 4
    cls = m["classification"]["image"]["ham10000_choice"]
    assert cls["classes"][5] == "melanocytic nevi" and "balanced_accuracy" in cls
    assert "likelihood" in cls["not_computed"]
    replies = [json.loads(line)["reply"] for line in (tmp_path / "gen" / "answers.jsonl").read_text().splitlines()]
    assert len(replies) == 16 and len(set(replies)) > 2           # the real images reach the model

    dermvqa("eval", *common, "--limit", 12, "--no-blind", "--mode", "likelihood", "--out", tmp_path / "lik")
    lik = json.loads((tmp_path / "lik" / "metrics.json").read_text())["classification"]["image"]["ham10000_choice"]
    assert lik["auc"]["n"] == 6 and 0 <= lik["auc"]["value"] <= 1 and lik["likelihood_accuracy"]["n"] == 6
    assert "## Classifier metrics" in (tmp_path / "lik" / "report.md").read_text()
