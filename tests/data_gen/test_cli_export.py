"""`dermvqa data synth` / `export-llava` through the CLI, and the LLaVA-JSON layout."""
import json

from typer.testing import CliRunner

from data_gen.cli import data_app
from data_gen.export_llava import export
from data_gen.records import read_records
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import CONCEPT_TERMS, TREE


def test_cli_synth_then_export(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["synth", "--csv", str(SAMPLE_CSV), "--ontology", str(ONTOLOGY), "--out", str(out), "--tree", str(TREE),
            "--concept-terms", str(CONCEPT_TERMS), "--families", "diagnosis,yes_no", "--families", "yes_no"]
    res = runner.invoke(data_app, args)
    assert res.exit_code == 0, res.output
    assert "[data synth]" in res.output and (out / "report.md").exists()
    records = read_records(out / "qa")
    assert {r["family"] for r in records} == {"diagnosis", "yes_no"}
    res = runner.invoke(data_app, ["export-llava", "--qa", str(out / "qa"), "--out", str(tmp_path / "llava.json"),
                                   "--split", "train"])
    assert res.exit_code == 0, res.output
    convs = json.loads((tmp_path / "llava.json").read_text())
    train = [r for r in records if r["split"] == "train"]
    assert len(convs) == len({r["image"] for r in train})
    assert sum(len(c["conversations"]) for c in convs) == 2 * len(train)
    first = convs[0]["conversations"]
    assert first[0]["from"] == "human" and first[0]["value"].startswith("<image>\n") and first[1]["from"] == "gpt"
    assert all("<image>" not in t["value"] for t in first[1:])


def test_shards_load_with_hf_datasets(real_run, tmp_path_factory):
    from datasets import load_dataset

    report, records = real_run
    out = next(p for p in tmp_path_factory.getbasetemp().glob("real*") if (p / "qa").exists())
    ds = load_dataset("parquet", data_dir=str(out / "qa"), cache_dir=str(tmp_path_factory.mktemp("hf_cache")))
    assert {k: len(v) for k, v in ds.items()} == report["splits"]


def test_cli_rejects_bad_shard(tmp_path):
    res = CliRunner().invoke(data_app, ["synth", "--csv", str(SAMPLE_CSV), "--ontology", str(ONTOLOGY),
                                        "--out", str(tmp_path), "--shard", "4/2"])
    assert res.exit_code != 0 and "shard" in res.output


def test_export_one_turn_per_record(real_run, tmp_path):
    _, records = real_run
    qa = tmp_path / "qa"
    from dataclasses import fields

    from data_gen.records import QARecord, write_parquet
    names = {f.name for f in fields(QARecord)}
    write_parquet([QARecord(**{k: v for k, v in r.items() if k in names}) for r in records], qa / "p.parquet")
    n = export(qa, tmp_path / "x.json", families=["multiple_choice"], group_by_image=False)
    convs = json.loads((tmp_path / "x.json").read_text())
    assert n == len(convs) == sum(r["family"] == "multiple_choice" for r in records)
    by_id = {r["id"]: r for r in records}
    for c in convs:
        assert c["conversations"][1]["value"] == by_id[c["id"]]["answer"]
