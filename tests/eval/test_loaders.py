import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from dermvqa.eval.items import parse_spec
from dermvqa.eval.loaders import LABEL_LISTS, load_bench
from dermvqa.eval.runner import GRID_CELL, check_images, load_image

DERMAVQA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dermavqa" / "iiyi_valid_ht.json"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


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
    assert len(load_bench(f"qa:{qa_world}:train").items) == 1
    present, missing = check_images(bench.items)
    assert list(missing) == ["gone"] and "not found" in missing["gone"] and len(present) == 36


def test_mmskin_csv(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    write_csv(tmp_path / "mm.csv", ["image", "question", "answer"],
              [["a.png", "What is seen?", "A red plaque on the thumb."], ["b.png", "Where?", "On the arm."]])
    items = load_bench(f"mmskin:{tmp_path / 'mm.csv'}").items
    assert [it.references for it in items] == [["A red plaque on the thumb."], ["On the arm."]]
    assert items[0].answer_type == "open" and items[0].images == [tmp_path / "a.png"]
    assert list(check_images(items)[1]) == ["mmskin-1"]
    write_csv(tmp_path / "bad.csv", ["image", "question"], [["a.png", "What?"]])
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['answer'\]"):
        load_bench(f"mmskin:{tmp_path / 'bad.csv'}")


def test_dermavqa_with_placeholder_images(tmp_path):
    encounters = json.loads(DERMAVQA.read_text())
    for enc in encounters[1:]:                               # the first encounter's images stay missing
        for name in enc["image_ids"]:
            Image.new("RGB", (30, 20), (120, 80, 60)).save(tmp_path / name)
    bench = load_bench(f"dermavqa:{DERMAVQA}:root={tmp_path}")
    assert len(bench.items) + sum(bench.skipped.values()) == len(encounters)
    first = encounters[0]
    item = next(it for it in bench.items if it.id == first["encounter_id"])
    assert item.question.startswith(first["query_title_en"].strip()[:20])
    assert item.references == [r["content_en"].strip() for r in first["responses"] if r["content_en"].strip()]
    assert len(item.images) == len(first["image_ids"]) and item.source == "iiyi"
    present, missing = check_images(bench.items)
    assert list(missing) == [first["encounter_id"]]
    multi = next(it for it in present if len(it.images) == 2)
    assert load_image(multi).size == (2 * GRID_CELL, GRID_CELL)       # two images side by side
    zh = load_bench(f"dermavqa:{DERMAVQA}:root={tmp_path}:lang=zh").items[0]
    assert zh.references[0] == encounters[0]["responses"][0]["content_zh"].strip()


def test_slake_and_vqa_rad_json(tmp_path):
    entries = [
        {"qid": 1, "img_name": "x/source.jpg", "question": "Is this a CT?", "answer": "Yes", "q_lang": "en",
         "answer_type": "CLOSED", "content_type": "Modality", "modality": "CT"},
        {"qid": 2, "img_name": "x/source.jpg", "question": "Which organ?", "answer": "Liver", "q_lang": "en",
         "answer_type": "OPEN", "content_type": "Organ", "modality": "CT"},
        {"qid": 3, "img_name": "x/source.jpg", "question": "这是什么?", "answer": "肝", "q_lang": "zh",
         "answer_type": "OPEN"},
        {"qid": 4, "image_name": "synpic1.jpg", "question": "Which is bigger, liver or kidney?",
         "answer": "liver", "answer_type": "CLOSED", "question_type": "SIZE", "image_organ": "ABD"},
    ]
    (tmp_path / "slake.json").write_text(json.dumps(entries, ensure_ascii=False))
    bench = load_bench(f"slake:{tmp_path / 'slake.json'}")
    assert [it.id for it in bench.items] == ["1", "2", "4"] and bench.skipped == {"q_lang not en": 1}
    ct, organ, size = bench.items
    assert ct.answer_type == "closed" and ct.options == ["yes", "no"] and ct.gold == "yes"
    assert organ.answer_type == "open" and organ.gold == "Liver" and organ.family == "Organ"
    assert size.answer_type == "closed" and size.options == [] and size.gold == "liver" and size.source == "ABD"
    (tmp_path / "bad.json").write_text(json.dumps([{"qid": 1, "question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match="entry 0"):
        load_bench(f"slake:{tmp_path / 'bad.json'}")


def test_zeroshot_label_list(tmp_path):
    pad = json.loads(LABEL_LISTS.read_text())["PAD_CLASSNAMES"]
    write_csv(tmp_path / "pad.csv", ["image", "label", "fitzpatrick"],
              [["a.png", "Melanoma", "5"], ["b.png", "nevus", "-1"]])
    items = load_bench(f"zeroshot:{tmp_path / 'pad.csv'}:PAD").items
    assert items[0].options == pad and items[0].gold == "melanoma" and items[0].answer_index == pad.index("melanoma")
    assert (items[0].fitzpatrick, items[1].fitzpatrick) == (5, 0)
    assert "A. nevus B. basal cell carcinoma" in items[0].question and items[0].family == "zeroshot_pad"
    write_csv(tmp_path / "odd.csv", ["image", "label"], [["a.png", "melanoma"], ["b.png", "psoriasis"]])
    with pytest.raises(ValueError, match=r"odd\.csv: line 3: label 'psoriasis' is not in list PAD"):
        load_bench(f"zeroshot:{tmp_path / 'odd.csv'}:PAD")
    with pytest.raises(ValueError, match="unknown label list"):
        load_bench(f"zeroshot:{tmp_path / 'pad.csv'}:NOPE")
