"""Zero-shot classification CSVs as DermLIP releases them (real PAD-LP.csv, integer-only F17K lists) and
HAM10000 with the DermaMNIST split read from the real files in ../shared."""
import csv
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dermvqa.cli import app
from dermvqa.eval.benchmarks.common import BenchError
from dermvqa.eval.benchmarks.zeroshot import label_list
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.runner import check_images
from tests.eval import official

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PAD_LP = SHARED / "pad-ufes-20" / "meta" / "downstream" / "PAD-LP.csv"
HAM = SHARED / "ham10000"


def test_real_pad_linear_probe_csv():
    bench = load_bench(f"zeroshot:{PAD_LP}:PAD:root={SHARED / 'pad-ufes-20' / 'examples'}")
    assert len(bench.items) == 461 and bench.info["items_per_split"] == {"test": 461, "train": 1493, "val": 344}
    assert bench.info["label_check"] == "integer labels confirmed by the diag column on every row"
    assert bench.info["class_list"].startswith("PAD (6 classes: nevus, basal cell carcinoma")
    present, missing = check_images(bench.items)            # data/downstream/PAD/images/... resolves by name
    assert [it.images[0].name for it in present] == ["PAT_8_15_820.png"] and len(missing) == 460
    assert present[0].gold == "basal cell carcinoma" and present[0].family == "zeroshot_pad"
    assert len(load_bench(f"zeroshot:{PAD_LP}:PAD:split=all", strict=False).items) == 2298


def test_integer_labels_class_lists_and_their_errors(tmp_path):
    f17k = label_list("F17K")
    assert len(f17k) == 114
    zs = official.write_csv(tmp_path / "f17k-113-zero-shot-test.csv", ["image_path", "label", "truncated_caption"],
                            [["/home/share/f17k/a.jpg", 0, ""], ["/home/share/f17k/b.jpg", 113, ""]])
    official.image(tmp_path / "images" / "a.jpg")
    bench = load_bench(f"zeroshot:{zs}:F17K")
    assert [it.gold for it in bench.items] == [f17k[0], f17k[113]] and len(bench.items[0].options) == 114
    assert bench.items[0].images[0] == tmp_path / "images" / "a.jpg"
    assert bench.info["label_check"].startswith("2 integer labels not confirmable (no diag column)")
    assert "114. " in bench.items[0].question and "A. " not in bench.items[0].question

    bad = official.write_csv(tmp_path / "bad.csv", ["image_path", "label"], [["a.jpg", 0], ["a.jpg", 114]])
    with pytest.raises(BenchError, match=r"bad\.csv: line 3: label 114 out of range for class list F17K "
                                         r"\(114 classes, 0-113\)"):
        load_bench(f"zeroshot:{bad}:F17K")
    names = official.write_csv(tmp_path / "names.csv", ["image_path", "label"],
                               [["a.jpg", "MEL"], ["a.jpg", "psoriasis"]])
    with pytest.raises(BenchError, match=r"names\.csv: line 3: class name 'psoriasis' is not in class list PAD"):
        load_bench(f"zeroshot:{names}:PAD")
    # a third-party CSV numbering F17K in its own order: diag contradicts the canonical index ...
    reordered = official.write_csv(tmp_path / "third.csv", ["image_path", "diag", "split", "label"],
                                   [["a.jpg", f17k[7], "test", 0], ["a.jpg", f17k[5], "test", 1]])
    with pytest.raises(BenchError, match=r"third\.csv: line 2: label 0 is .* but diag .* another order"):
        load_bench(f"zeroshot:{reordered}:F17K")
    # ... and loads with its own list, which the diag column then confirms
    order = tmp_path / "order.txt"
    order.write_text(f"{f17k[7]}\n{f17k[5]}\n")
    ok = load_bench(f"zeroshot:{reordered}:classes={order}")
    assert [it.gold for it in ok.items] == [f17k[7], f17k[5]] and ok.items[0].options == [f17k[7], f17k[5]]
    assert ok.info["label_check"] == "integer labels confirmed by the diag column on every row"
    ham = official.write_csv(tmp_path / "ham.csv", ["image_path", "diag", "split", "label"],
                             [["a.jpg", "akiec", "test", 0], ["a.jpg", "nv", "test", 5]])
    assert [it.gold for it in load_bench(f"zeroshot:{ham}:HAM").items] == ["actinic keratosis", "nevus"]
    with pytest.raises(BenchError, match="needs a class list"):
        load_bench(f"zeroshot:{ham}")


def test_real_ham10000_with_dermamnist_split():
    bench = load_bench(f"ham10000:{HAM}")
    assert len(bench.items) == 2 * 2005 and len(bench.others) == 2 * (7007 + 1003) and bench.skipped == {}
    assert bench.info["items_per_split"] == {"test": 4010, "train": 14014, "val": 2006}
    assert bench.info["test_images_whose_lesion_is_in_train"] == 693
    assert all(it.images[0].is_file() for it in bench.items + bench.others)
    with open(HAM / "dermamnist_split.csv") as f:
        first_test = next(r for r in csv.DictReader(f) if r["split"] == "test" and r["index_in_split"] == "0")
    choice, diagnosis = bench.items[:2]
    assert choice.id == f"{first_test['image_id']}/choice" and choice.answer_index == int(first_test["label"])
    assert len(choice.options) == 7 and choice.options[5] == "melanocytic nevi"
    assert diagnosis.answer_type == "open" and diagnosis.references[0] == choice.gold
    assert len(load_bench(f"ham10000:{HAM}:split=all").items) == 2 * 10015


def _small_ham(tmp_path, n=30, edit=None) -> Path:
    """The first n real HAM10000 rows copied into tmp_path (images too), edited by edit(meta, split)."""
    with open(HAM / "HAM10000_metadata.csv") as f:
        meta = list(csv.reader(f))[: n + 1]
    ids = {r[1] for r in meta[1:]}
    with open(HAM / "dermamnist_split.csv") as f:
        split = [r for i, r in enumerate(csv.reader(f)) if i == 0 or r[0] in ids]
    if edit:
        edit(meta, split)
    official.write_csv(tmp_path / "HAM10000_metadata.csv", meta[0], meta[1:])
    official.write_csv(tmp_path / "dermamnist_split.csv", split[0], split[1:])
    (tmp_path / "images").mkdir()
    for i in ids:
        shutil.copy(HAM / "images" / f"{i}.jpg", tmp_path / "images")
    return tmp_path


def test_ham10000_bad_input(tmp_path):
    def unknown_dx(meta, split):
        meta[3][2] = "psoriasis"

    def wrong_label(meta, split):
        split[2][3] = str((int(split[2][3]) + 1) % 7)

    def out_of_range(meta, split):
        split[4][3] = "9"

    def not_in_split(meta, split):
        del split[5]

    cases = [(unknown_dx, r"HAM10000_metadata\.csv: line 4: unknown dx 'psoriasis'"),
             (wrong_label, r"dermamnist_split\.csv: line 3: label \d \(\w+\) but the metadata says dx"),
             (out_of_range, r"dermamnist_split\.csv: line 5: label '9' out of range 0-6")]
    for k, (edit, message) in enumerate(cases):
        with pytest.raises(BenchError, match=message):
            load_bench(f"ham10000:{_small_ham(tmp_path / str(k), edit=edit)}:split=all")
    dropped = load_bench(f"ham10000:{_small_ham(tmp_path / 'd', edit=not_in_split)}:split=all")
    assert dropped.skipped == {"in the metadata but not in dermamnist_split.csv": 1} and len(dropped.items) == 58
    shutil.rmtree(tmp_path / "d" / "images")
    with pytest.raises(BenchError, match=r"image folder missing: none of the images found"):
        load_bench(f"ham10000:{tmp_path / 'd'}:split=all")


def test_dry_run_on_real_ham10000():
    result = CliRunner().invoke(app, ["eval", "--bench", f"ham10000:{HAM}", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "images per split in the file: test 2,005, train 7,007, val 1,003" in result.output
    assert "image files, whole file: 10,015 of 10,015 found" in result.output
    assert "selected split test: 4,010 items; by answer type: closed 2,005, open 2,005" in result.output
    bad = CliRunner().invoke(app, ["eval", "--bench", f"vqarad:{HAM / 'dermamnist_split.csv'}", "--dry-run"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert bad.output.startswith(f"error: {HAM / 'dermamnist_split.csv'}: not a VQA-RAD JSON")


def test_pad_linear_probe_csv_gets_skin_types_from_the_metadata(tmp_path):
    meta = SHARED / "pad-ufes-20" / "metadata.csv"
    with open(meta) as f:
        fst = {Path(r["img_id"]).stem: r["fitspatrick"] for r in csv.DictReader(f)}
    bench = load_bench(f"zeroshot:{PAD_LP}:PAD:split=all:skin_types={meta}", strict=False)
    typed = 0
    for it in bench.items:
        value = fst[Path(it.images[0]).stem]
        assert it.fitzpatrick == (int(float(value)) if value else 0)
        typed += bool(value)
    assert bench.info["skin_types"] == f"joined by image stem from {meta}: {typed} of 2298 items have a type"
    assert 0 < typed < 2298
    # PAD-LP.csv names .png files; the converted copy in ../shared holds .jpg: found by stem
    images = SHARED / "pad-ufes-20" / "images"
    here = {f.stem for f in images.iterdir()}
    test = load_bench(f"zeroshot:{PAD_LP}:PAD:root={images}")
    present, _ = check_images(test.items)
    assert len(present) == sum(Path(it.images[0]).stem in here for it in test.items) > 100
    assert all(it.images[0].suffix == ".jpg" for it in present)
    assert test.info["images_found_by_stem"].startswith("733 ")
    # a CSV with PAD's own column spelling needs no join
    own = official.write_csv(tmp_path / "own.csv", ["image_path", "label", "fitspatrick"],
                             [["a.jpg", "BCC", "3.0"], ["b.jpg", "MEL", ""]])
    assert [it.fitzpatrick for it in load_bench(f"zeroshot:{own}:PAD", strict=False).items] == [3, 0]
    bad = official.write_csv(tmp_path / "bad.csv", ["img_id", "age"], [["a.png", "40"]])
    with pytest.raises(BenchError, match=r"skin_types=.*bad\.csv: needs one of the columns img_id"):
        load_bench(f"zeroshot:{PAD_LP}:PAD:skin_types={bad}")
