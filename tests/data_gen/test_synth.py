"""Determinism, shard equality, resume after a kill, split by image, dedup, bad labels."""
import hashlib
import shutil

import pytest

from data_gen import synth
from data_gen.records import read_records
from data_gen.synth import synthesize
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import make_row, real_rows, synth_kwargs, write_csv


def digests(out):
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "run.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory):
    """The 100 real rows repeated 3x with unique filenames: 300 rows, 6 parts of 50."""
    rows = []
    for k in range(3):
        for r in real_rows():
            rows.append({**r, "filename": f"{k}/{r['filename']}"})
    return write_csv(tmp_path_factory.mktemp("big") / "big.csv", rows)


def test_same_seed_is_byte_identical_and_seed_matters(big_csv, tmp_path):
    a = synthesize(big_csv, ONTOLOGY, tmp_path / "a", **synth_kwargs(chunk_rows=50))
    synthesize(big_csv, ONTOLOGY, tmp_path / "b", **synth_kwargs(chunk_rows=50))
    synthesize(big_csv, ONTOLOGY, tmp_path / "c", **synth_kwargs(chunk_rows=50, seed=1))
    assert a["complete"] and digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a") != digests(tmp_path / "c")


def test_shards_together_equal_one_full_run(big_csv, tmp_path):
    synthesize(big_csv, ONTOLOGY, tmp_path / "full", **synth_kwargs(chunk_rows=50, workers=2))
    partial = synthesize(big_csv, ONTOLOGY, tmp_path / "sharded", **synth_kwargs(chunk_rows=50, shard=(0, 3)))
    assert not partial["complete"] and partial["parts_done"] == 2
    for i in (2, 1):
        synthesize(big_csv, ONTOLOGY, tmp_path / "sharded", **synth_kwargs(chunk_rows=50, shard=(i, 3)))
    assert digests(tmp_path / "full") == digests(tmp_path / "sharded")


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_a_kill(big_csv, tmp_path, monkeypatch, workers):
    synthesize(big_csv, ONTOLOGY, tmp_path / "clean", **synth_kwargs(chunk_rows=50, workers=1))
    real_write, calls = synth.write_parquet, []

    def dying_write(records, path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")  # dies between a part's parquet files and its stats
        real_write(records, path)

    monkeypatch.setattr(synth, "write_parquet", dying_write)
    # one process: the interrupt surfaces here; forked workers: the dead worker fails the run
    with pytest.raises(KeyboardInterrupt if workers == 1 else RuntimeError):
        synthesize(big_csv, ONTOLOGY, tmp_path / "killed", **synth_kwargs(chunk_rows=50, workers=workers))
    monkeypatch.setattr(synth, "write_parquet", real_write)
    assert 0 < len(list((tmp_path / "killed" / "parts").glob("*.json"))) < 6
    report = synthesize(big_csv, ONTOLOGY, tmp_path / "killed", **synth_kwargs(chunk_rows=50, workers=workers))
    assert report["complete"]
    ids = [r["id"] for r in read_records(tmp_path / "killed" / "qa")]
    assert len(ids) == len(set(ids)) == report["records"]
    assert digests(tmp_path / "clean") == digests(tmp_path / "killed")


def test_other_settings_in_same_out_dir_refused(tmp_path):
    synthesize(SAMPLE_CSV, ONTOLOGY, tmp_path / "o", **synth_kwargs())
    with pytest.raises(ValueError, match="seed"):
        synthesize(SAMPLE_CSV, ONTOLOGY, tmp_path / "o", **synth_kwargs(seed=3))
    report = synthesize(SAMPLE_CSV, ONTOLOGY, tmp_path / "o", **synth_kwargs(seed=3, overwrite=True))
    assert report["complete"] and report["settings"]["seed"] == 3


def test_bad_shard_and_family_names(tmp_path):
    with pytest.raises(ValueError, match="shard"):
        synthesize(SAMPLE_CSV, ONTOLOGY, tmp_path / "o", **synth_kwargs(shard=(3, 3)))
    with pytest.raises(ValueError, match="unknown QA family"):
        synthesize(SAMPLE_CSV, ONTOLOGY, tmp_path / "o2", **synth_kwargs(families=["diagnosis", "horoscope"]))


def test_split_by_image_and_perceptual_hash(world, tmp_path):
    csv_path, images = world
    import csv as _csv
    rows = list(_csv.DictReader(open(csv_path, newline="")))
    copies = tmp_path / "images"
    shutil.copytree(images, copies)
    extra = []
    for r in rows[:30]:  # the same pictures again under new names: must follow the original's split
        new = r["filename"].replace("lesion_", "copy_")
        shutil.copy(copies / r["filename"], copies / new)
        extra.append({**r, "filename": new})
    path = write_csv(tmp_path / "w.csv", rows + extra, list(rows[0]))
    synthesize(path, ONTOLOGY, tmp_path / "out", images_dir=copies, **synth_kwargs(test_fraction=0.5))
    records = read_records(tmp_path / "out" / "qa")
    split_of = {}
    for r in records:
        assert split_of.setdefault(r["image"], r["split"]) == r["split"]  # one image, one split
    for r in extra:
        assert split_of[r["filename"]] == split_of[r["filename"].replace("copy_", "lesion_")]
    assert set(split_of.values()) == {"train", "test"}


def test_missing_or_corrupt_image_is_counted_or_raised(world, tmp_path):
    csv_path, images = world
    import csv as _csv
    rows = list(_csv.DictReader(open(csv_path, newline="")))[:8]
    copies = tmp_path / "images"
    shutil.copytree(images, copies)
    (copies / rows[0]["filename"]).unlink()
    (copies / rows[1]["filename"]).write_bytes(b"not a png")
    path = write_csv(tmp_path / "w.csv", rows, list(rows[0]))
    report = synthesize(path, ONTOLOGY, tmp_path / "out", images_dir=copies, **synth_kwargs())
    assert report["rejections"]["image file missing"]["count"] == 1
    assert report["rejections"]["image unreadable"]["count"] == 1
    with pytest.raises(ValueError, match=r"data row 1 .*image file not found"):
        synthesize(path, ONTOLOGY, tmp_path / "strict", images_dir=copies, **synth_kwargs(strict=True))
    (copies / rows[0]["filename"]).write_bytes((copies / rows[2]["filename"]).read_bytes())
    with pytest.raises(ValueError, match=r"data row 2 .*not a readable image"):
        synthesize(path, ONTOLOGY, tmp_path / "strict2", images_dir=copies, **synth_kwargs(strict=True))


def test_unknown_label_duplicates_and_comma_labels(tmp_path):
    rows = [make_row("a.png"), make_row("a.png"),
            make_row("b.png", label="dragon scale disease", hier=""),
            make_row("c.png", label="Malignant melanoma, melanoma", concepts="black, brown(hyperpigmentation)",
                     hier="proliferations, malignant, melanocytic, Malignant melanoma, melanoma"),
            make_row("d.png", label="Basal cell carcinoma", concepts="nodule",
                     hier="proliferations, malignant, non-melanocytic, Basal cell carcinoma")]
    path = write_csv(tmp_path / "x.csv", rows)
    report = synthesize(path, ONTOLOGY, tmp_path / "out", **synth_kwargs())
    rej = report["rejections"]
    assert rej["duplicate image row (filename seen before)"]["count"] == 1
    assert rej["label not in ontology (diagnosis questions skipped)"]["count"] == 1
    records = read_records(tmp_path / "out" / "qa")
    assert {r["family"] for r in records if r["image"] == "b.png"} == {"morphology", "caption_report"}
    mel = [r for r in records if r["image"] == "c.png" and r["family"] == "diagnosis"]
    assert mel[0]["answer"] == "Malignant melanoma, melanoma"
    assert mel[0]["ontology_path"] == ["proliferations", "malignant", "melanocytic", "Malignant melanoma, melanoma"]
    with pytest.raises(ValueError, match=r"data row 3 \(b\.png\): label not in ontology"):
        synthesize(path, ONTOLOGY, tmp_path / "strict", **synth_kwargs(strict=True))


def test_validation_split_comes_from_train_and_leaves_test_alone(big_csv, tmp_path):
    import json

    synthesize(big_csv, ONTOLOGY, tmp_path / "plain", **synth_kwargs(chunk_rows=100))
    synthesize(big_csv, ONTOLOGY, tmp_path / "val", **synth_kwargs(chunk_rows=100, val_fraction=0.25))
    plain, val = ({r["image"]: r["split"] for r in read_records(tmp_path / n / "qa")} for n in ("plain", "val"))
    assert plain.keys() == val.keys() and set(val.values()) == {"train", "val", "test"}
    assert {i for i, s in plain.items() if s == "test"} == {i for i, s in val.items() if s == "test"}
    assert all(plain[i] == "train" for i, s in val.items() if s == "val")
    assert 0.15 < sum(s == "val" for s in val.values()) / len(val) < 0.35
    assert "val_fraction" not in json.loads((tmp_path / "plain" / "run.json").read_text())  # older runs resume
    with pytest.raises(ValueError, match="sum below 1"):
        synthesize(big_csv, ONTOLOGY, tmp_path / "bad", **synth_kwargs(test_fraction=0.5, val_fraction=0.5))
    assert not (tmp_path / "bad").exists()
