"""Spec grammar, our QA parquet, DermaVQA (the real iiyi valid file) and MM-Skin, and bad-input errors."""
import json
import shutil
from pathlib import Path

import pytest

from dermvqa.eval.benchmarks.common import BenchError
from dermvqa.eval.items import parse_spec
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.runner import GRID_CELL, check_images, load_image
from tests.eval import official

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DERMAVQA = SHARED / "dermavqa" / "iiyi_valid_ht.json"
HAM = SHARED / "ham10000"


def test_spec_grammar():
    s = parse_spec("zeroshot:data/pad.csv:PAD:root=/imgs")
    assert (s.kind, str(s.path), s.args, s.opts) == ("zeroshot", "data/pad.csv", ["PAD"], {"root": "/imgs"})
    with pytest.raises(ValueError, match="bad bench spec"):
        parse_spec("imagenet:x")


def test_qa_parquet_loader(qa_world):
    bench = load_bench(f"qa:{qa_world}")
    assert bench.kind == "qa" and len(bench.items) == 12 * 3 + 1           # test split only
    mc = next(it for it in bench.items if it.id == "mc5")
    assert mc.gold == "eczema" and mc.options[mc.answer_index] == "eczema" and mc.fitzpatrick == 3
    assert mc.group == "inflammatory" and mc.images[0] == qa_world / "images" / "synthetic" / "img5.png"
    assert mc.split == "test" and len(load_bench(f"qa:{qa_world}:train").items) == 1
    present, missing = check_images(bench.items)
    assert list(missing) == ["gone"] and "not found" in missing["gone"] and len(present) == 36
    first = load_bench(f"qa:{qa_world}", limit=5)  # a corpus of millions: only the items eval will take
    assert [it.id for it in first.items] == [it.id for it in bench.items[:5]]
    assert first.info["items_in_split"] == len(bench.items) == bench.info["items_in_split"]


def test_dermavqa_real_iiyi_valid_file(tmp_path):
    encounters = json.loads(DERMAVQA.read_text())
    layout = tmp_path / "iiyi"                                 # the official layout: iiyi/valid_ht.json
    layout.mkdir()
    shutil.copy(DERMAVQA, layout / "valid_ht.json")
    for enc in encounters[1:]:                                # the first encounter's images stay missing
        for name in enc["image_ids"]:
            official.image(tmp_path / "images_valid" / name)
    bench = load_bench(f"dermavqa:{layout / 'valid_ht.json'}")
    assert len(bench.items) == 56 and bench.info["source"] == "iiyi" and bench.info["file_split"] == "valid"
    empty = sum(1 for e in encounters for r in e["responses"] if not r["content_en"].strip())
    assert empty == 5 and bench.skipped == {"empty en response (reference left out, encounter kept)": 5}
    first = encounters[0]
    item = next(it for it in bench.items if it.id == first["encounter_id"])
    assert item.question.startswith(first["query_title_en"].strip()[:20]) and item.lang == "en"
    assert item.references == [r["content_en"].strip() for r in first["responses"] if r["content_en"].strip()]
    assert item.source == "iiyi" and item.split == "valid"
    present, missing = check_images(bench.items)
    assert list(missing) == [first["encounter_id"]]
    multi = next(it for it in present if len(it.images) == 2)
    assert multi.images[0].parent == tmp_path / "images_valid"
    assert load_image(multi).size == (2 * GRID_CELL, GRID_CELL)       # two images side by side
    every = load_bench(f"dermavqa:{layout / 'valid_ht.json'}:lang=all")
    assert len(every.items) == 3 * 56 and {it.lang for it in every.items} == {"en", "zh", "es"}
    zh = next(it for it in every.items if it.id == f"{first['encounter_id']}-zh")
    assert zh.references[0] == first["responses"][0]["content_zh"].strip()


def test_dermavqa_without_images_and_reddit_files(tmp_path):
    with pytest.raises(BenchError, match=r"iiyi_valid_ht\.json: image folder missing: none of the images found"):
        load_bench(f"dermavqa:{DERMAVQA}")
    assert len(load_bench(f"dermavqa:{DERMAVQA}", strict=False).items) == 56
    with pytest.raises(BenchError, match=r"valid\.json: reddit encounters are released without query text"):
        load_bench(f"dermavqa:{official.reddit(tmp_path)}")


def test_mmskin_official_csv(tmp_path):
    csv_path = official.mmskin(tmp_path)
    bench = load_bench(f"mmskin:{csv_path}")
    closed = [it for it in bench.items if it.answer_type == "closed"]
    assert len(bench.items) == 5452 and len(closed) == 1323 and bench.skipped == {}
    yes = next(it for it in closed if it.references[0].startswith("Yes"))
    assert yes.options == ["yes", "no"] and yes.gold == "yes" and yes.family == "mmskin_yes_no"
    assert bench.items[0].images[0] == tmp_path / "dataset" / "SCIN" / "images" / "img0.png"
    assert bench.items[29].images[0] == tmp_path / "dataset" / "SCIN" / "images" / "img29.png"   # missing
    # the same file resolves from the dataset/ folder itself too, and an empty answer is counted
    rows = [["dataset/SCIN/images/img1.png", "What is seen?", ""], ["dataset/SCIN/images/img2.png", "Where?", "Arm."]]
    small = official.write_csv(tmp_path / "small.csv", ["image", "question", "answer"], rows)
    b = load_bench(f"mmskin:{small}:root={tmp_path / 'dataset'}")
    assert b.skipped == {"empty answer": 1} and b.items[0].images[0].is_file()


def test_wrong_kind_and_missing_folders_are_one_clear_line(tmp_path):
    cases = [(f"slake:{HAM / 'HAM10000_metadata.csv'}",
              r"HAM10000_metadata\.csv: not a SLAKE JSON .* looks like a HAM10000 folder: use --bench ham10000:"),
             (f"mmskin:{DERMAVQA}", r"iiyi_valid_ht\.json: not a MM-Skin CSV .* use --bench dermavqa:"),
             (f"dermavqa:{official.vqa_rad(tmp_path, n=8, n_test=4)}",
              r"not a DermaVQA JSON \(entry 0 has no encounter_id\); "
              r"it looks like a VQA-RAD JSON: use --bench vqarad:"),
             (f"mmskin:{official.mmskin(tmp_path, n=4, n_yes_no=2)}:root={tmp_path / 'nowhere'}",
              r"MM-Skin_test\.csv: image folder root=.*nowhere not found"),
             (f"zeroshot:{tmp_path / 'absent.csv'}:PAD", r"absent\.csv does not exist")]
    for spec, message in cases:
        with pytest.raises(BenchError, match=message) as e:
            load_bench(spec)
        assert "\n" not in str(e.value)
