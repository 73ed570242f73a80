"""Unusable training records (a corrupt image, an answer longer than max_length) are skipped, counted, capped."""
import json
import shutil

import pytest

from data_gen.records import QARecord, read_records, write_parquet
from dermvqa.data.skips import TooManySkipped, read_skips
from dermvqa.train.trainer import SKIPPED, run_training
from tests.train.tiny_run import losses, make_world, recipe


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("world"))
    (world / "images" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    recs = read_records(world / "qa")
    recs[0]["answer"] = "scaly " * 80  # cannot fit data.max_length=64 whole
    for p in (world / "qa").glob("*.parquet"):
        p.unlink()
    write_parquet([QARecord(**r) for r in recs], world / "qa" / "part.parquet")
    return world


def test_bad_records_are_skipped_counted_and_resume_skips_them_again(bad_world, tmp_path):
    extra = ("data.max_skipped_fraction=0.2", "train.save_steps=6", "data.cache=false")
    final = run_training(recipe(bad_world, tmp_path / "ref", extra=extra))
    skipped = read_skips(tmp_path / "ref" / SKIPPED)
    assert set(skipped) == {"3-dx", "3-yn", "0-dx"}
    assert skipped["3-dx"].startswith("unreadable image: record 3-dx") and "3.png" in skipped["3-dx"]
    assert skipped["0-dx"].startswith("too long: prompt and answer are")
    summary = json.loads((final / "data_summary.json").read_text())["skipped records"]
    assert summary == {"count": 3, "by_reason": {"unreadable image": 2, "too long": 1}}
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "ref", cut, ignore=shutil.ignore_patterns("checkpoint-12", "model", "train_log.json"))
    run_training(recipe(bad_world, cut, extra=extra), resume=True)
    ref, got = (losses(json.loads((d / "train_log.json").read_text())) for d in (tmp_path / "ref", cut))
    assert sorted(got) == list(range(1, 13)) and all(abs(got[s] - ref[s]) < 1e-5 for s in range(7, 13))
    assert set(read_skips(cut / SKIPPED)) == set(skipped)  # met again, counted once


def test_more_skips_than_allowed_stop_the_run_with_the_list(bad_world, tmp_path):
    with pytest.raises(TooManySkipped, match=r"could not be used, more than data.max_skipped_fraction=0.05 .*3-"):
        run_training(recipe(bad_world, tmp_path / "run", extra=("data.max_skipped_fraction=0.05",)))
