"""Importers to the Derm1M format: HAM10000, Fitzpatrick17k (full CSV and the 4,087-image AJL subset) and
PAD-UFES-20 on the real files in ../shared, PAD-UFES-20's bad rows on fixtures of its metadata format."""
import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from data_gen.cli import data_app
from data_gen.derm1m import iter_rows
from data_gen.importers.common import ImportFailed, check_mapping
from data_gen.importers.fitzpatrick17k import import_fitzpatrick17k
from data_gen.importers.ham10000 import DERMAMNIST_LABELS, DX, import_ham10000
from data_gen.importers.pad_ufes_20 import DIAGNOSTIC, import_pad_ufes_20
from data_gen.ontology import Ontology
from data_gen.records import read_records
from data_gen.synth import synthesize
from tests.conftest import ONTOLOGY, SHARED_DATA
from tests.data_gen.conftest import TREE, synth_kwargs

HAM = SHARED_DATA / "ham10000"
F17K = SHARED_DATA / "fitzpatrick17k" / "fitzpatrick17k.csv"
AJL = SHARED_DATA / "fitzpatrick17k" / "ajl_subset.csv"
PAD = SHARED_DATA / "pad-ufes-20"
# Per-class counts of the official DermaMNIST split, in medmnist label order (from ham10000/SOURCE.md).
DERMAMNIST_COUNTS = {"train": [228, 359, 769, 80, 779, 4693, 99], "val": [33, 52, 110, 12, 111, 671, 14],
                     "test": [66, 103, 220, 23, 223, 1341, 29]}


@pytest.fixture(scope="module")
def ontology():
    return Ontology.load(ONTOLOGY, TREE)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ham_rows(n):
    return read_csv(HAM / "HAM10000_metadata.csv")[:n]


def write(path, rows, columns=None):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_mappings_resolve_to_the_documented_nodes(ontology):
    check_mapping(DX, ontology, "HAM10000")
    check_mapping(DIAGNOSTIC, ontology, "PAD-UFES-20")
    assert sorted(DX) == sorted(DERMAMNIST_LABELS)
    wrong = {"mel": (DX["nv"][0], "Melanoma")}
    with pytest.raises(ImportFailed, match="'mel' -> 'Melanoma' does not resolve"):
        check_mapping(wrong, ontology, "test")


def test_ham10000_keeps_the_dermamnist_split(tmp_path, ontology):
    report = import_ham10000(HAM / "HAM10000_metadata.csv", HAM / "images", tmp_path,
                             split_file=HAM / "dermamnist_split.csv", ontology=ontology)
    assert report["rows_read"] == report["rows_written"] == 10015 and report["rows_skipped"] == 0
    rows = read_csv(tmp_path / "derm1m.csv")
    label_of = {r["image_id"]: r for r in read_csv(HAM / "dermamnist_split.csv")}
    counts = {s: [0] * 7 for s in DERMAMNIST_COUNTS}
    meta = {r["image_id"]: r["dx"] for r in read_csv(HAM / "HAM10000_metadata.csv")}
    for r in rows:
        given = label_of[r["source_id"]]
        assert r["split"] == given["split"]
        assert DERMAMNIST_LABELS[int(given["label"])] == meta[r["source_id"]]
        counts[r["split"]][int(given["label"])] += 1
        assert (HAM / "images" / r["filename"]).is_file()
    assert counts == DERMAMNIST_COUNTS
    # The loader data synth uses reads the split and resolves every label to the node DX names.
    parsed = list(iter_rows(tmp_path / "derm1m.csv"))
    assert {p.split for p in parsed} == {"train", "val", "test"} and not any(p.problem for p in parsed)
    paths = {p.disease_label: ontology.resolve(p.disease_label, p.hierarchical_label).paths for p in parsed}
    assert paths == {label: (node,) for node, label in DX.values()}


def test_ham10000_without_split_file_keeps_lesions_together(tmp_path):
    import_ham10000(HAM / "HAM10000_metadata.csv", HAM / "images", tmp_path, test_fraction=0.3)
    rows = read_csv(tmp_path / "derm1m.csv")
    split_of_lesion = {}
    for r in rows:
        assert split_of_lesion.setdefault(r["group_id"], r["split"]) == r["split"]
    share = sum(r["split"] == "test" for r in rows) / len(rows)
    assert 0.25 < share < 0.35
    import_ham10000(HAM / "HAM10000_metadata.csv", HAM / "images", tmp_path / "v", test_fraction=0.3,
                    val_fraction=0.1)  # a validation split comes out of train; test keeps the same lesions
    with_val = read_csv(tmp_path / "v" / "derm1m.csv")
    assert {r["filename"] for r in with_val if r["split"] == "test"} == {r["filename"] for r in rows
                                                                        if r["split"] == "test"}
    for r in with_val:
        assert split_of_lesion.setdefault(r["group_id"] + "/v", r["split"]) == r["split"]
    assert 0.07 < sum(r["split"] == "val" for r in with_val) / len(with_val) < 0.13


def _bad_ham(tmp_path):
    """Six real rows plus an unknown dx code, a duplicate image id and a row whose image is absent."""
    images = tmp_path / "images"
    images.mkdir()
    rows = ham_rows(6)
    for r in rows:
        shutil.copy(HAM / "images" / f"{r['image_id']}.jpg", images)
    rows.append({**rows[0], "image_id": rows[1]["image_id"]})                 # duplicate id
    rows.append({**rows[2], "dx": "xyz"})                                      # unknown code (its id is new below)
    rows[-1]["image_id"] = "ISIC_9999990"
    rows.append({**rows[3], "image_id": "ISIC_9999991"})                      # no image file
    return write(tmp_path / "meta.csv", rows), images


def test_bad_rows_are_counted_skips_or_strict_errors(tmp_path):
    meta, images = _bad_ham(tmp_path)
    report = import_ham10000(meta, images, tmp_path / "out")
    assert report["rows_written"] == 6 and report["rows_skipped"] == 3
    assert {k: v["count"] for k, v in report["skipped"].items()} == {
        "duplicate image id": 1, "unknown label": 1, "image file missing": 1}
    skipped = read_csv(tmp_path / "out" / "skipped.csv")
    assert [(s["row"], s["reason"]) for s in skipped] == [
        ("7", "duplicate image id"), ("8", "unknown label"), ("9", "image file missing")]
    assert "'xyz'" in skipped[1]["detail"] and "ISIC_9999991" in skipped[2]["detail"]
    md = (tmp_path / "out" / "import_report.md").read_text()
    assert "| unknown label | 1 |" in md and "row 8 ISIC_9999990" in md
    with pytest.raises(ImportFailed, match=r"meta\.csv: data row 7 \(ISIC_\d+\): duplicate image id"):
        import_ham10000(meta, images, tmp_path / "strict", strict=True)


def test_cli_import_strict_names_file_and_row(tmp_path):
    meta, images = _bad_ham(tmp_path)
    runner = CliRunner()
    base = ["import", "ham10000", "--metadata", str(meta), "--images", str(images)]
    res = runner.invoke(data_app, base + ["--out", str(tmp_path / "a"), "--strict"])
    # the `dermvqa` entry point prints it as one `error:` line, exit 2 (tests/test_cli_errors.py)
    assert isinstance(res.exception, ImportFailed)
    assert "meta.csv: data row 7" in str(res.exception) and "duplicate image id" in str(res.exception)
    res = runner.invoke(data_app, base + ["--out", str(tmp_path / "b"), "--ontology", str(ONTOLOGY)])
    assert res.exit_code == 0, res.output
    assert "6 written" in res.output and "unknown label: 1" in res.output


def test_split_file_rows_missing_from_it_are_skipped(tmp_path):
    rows = ham_rows(4)
    split = write(tmp_path / "split.csv", [{"image_id": r["image_id"], "split": "val"} for r in rows[:3]]
                  + [{"image_id": "ISIC_0000000", "split": "test"}])
    report = import_ham10000(write(tmp_path / "meta.csv", rows), HAM / "images", tmp_path / "out", split_file=split)
    assert report["splits"] == {"val": 3} and report["skipped"]["not in the split file"]["count"] == 1
    assert report["notes"] == {"split-file ids without a metadata row": 1}
    write(split, [{"image_id": rows[0]["image_id"], "split": "holdout"}])
    with pytest.raises(ImportFailed, match="split.csv: data row 1 .*'holdout' is not one of"):
        import_ham10000(tmp_path / "meta.csv", HAM / "images", tmp_path / "out2", split_file=split)


def test_imported_ham_goes_through_synthesis_with_its_split(tmp_path):
    meta = read_csv(HAM / "HAM10000_metadata.csv")
    rows = [r for dx in DX for r in [m for m in meta if m["dx"] == dx][:9]]
    split = {r["image_id"]: r["split"] for r in read_csv(HAM / "dermamnist_split.csv")}
    import_ham10000(write(tmp_path / "meta.csv", rows), HAM / "images", tmp_path / "imp",
                    split_file=HAM / "dermamnist_split.csv")
    # The sub-ontology the importer writes is enough for synthesis (no Derm1M files needed).
    report = synthesize(tmp_path / "imp" / "derm1m.csv", tmp_path / "imp" / "ontology.json", tmp_path / "qa",
                        images_dir=HAM / "images", families=["diagnosis", "multiple_choice"],
                        **synth_kwargs(tree_path=None))
    assert report["rows"]["accepted"] == 63, report["rejections"]
    records = read_records(tmp_path / "qa" / "qa")
    assert {r["family"] for r in records} == {"diagnosis", "multiple_choice"}
    for r in records:
        assert r["split"] == split[r["image"].removesuffix(".jpg")]
    names = {node[-1]: label for node, label in DX.values()}
    assert {r["label"] for r in records if r["family"] == "diagnosis"} <= set(names.values())


def test_fitzpatrick17k_reports_rows_without_images(tmp_path, ontology):
    rows = read_csv(F17K)
    images = tmp_path / "images"
    images.mkdir()
    have = [r for r in rows if r["label"] == "psoriasis"][:3] + [r for r in rows if r["fitzpatrick_scale"] == "-1"][:1]
    for r in have:
        Image.new("RGB", (8, 8), (200, 120, 100)).save(images / f"{r['md5hash']}.jpg")
    report = import_fitzpatrick17k(F17K, images, tmp_path / "out", ontology)
    unknown = {r["label"] for r in rows} - {k for k, v in report["mapping"].items() if not v.startswith("none")}
    n_unknown = sum(r["label"] in unknown for r in rows)
    have_known = [r for r in have if r["label"] not in unknown]
    assert report["rows_read"] == len(rows) == 16577
    assert report["rows_written"] == len(have_known)
    assert report["skipped"]["image file missing"]["count"] == len(rows) - n_unknown - len(have_known)
    assert report["skipped"]["label not in the ontology"]["count"] == n_unknown
    missing = [s for s in read_csv(tmp_path / "out" / "skipped.csv") if s["reason"] == "image file missing"]
    assert all(s["detail"].endswith(f"{s['id']}.jpg") for s in missing)
    out = {r["source_id"]: r for r in read_csv(tmp_path / "out" / "derm1m.csv")}
    for r in have_known:
        fst = r["fitzpatrick_scale"]
        assert out[r["md5hash"]]["fitzpatrick"] == ("" if fst == "-1" else fst)
    assert report["mapping"]["nevocytic nevus"].startswith("proliferations > benign > melanocytic > Melanocytic nevus")


PAD_COLUMNS = ["patient_id", "lesion_id", "smoke", "drink", "age", "gender", "fitspatrick", "region", "diameter_1",
               "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed"]


def _pad_row(patient, lesion, n, dx, fst="3.0", **kw):
    row = {c: "" for c in PAD_COLUMNS}
    row.update(patient_id=f"PAT_{patient}", lesion_id=str(lesion), age="61", gender="FEMALE", fitspatrick=fst,
               region="FACE", diagnostic=dx, itch="True", grew="False", hurt="UNK", changed="False",
               bleed="True", elevation="False", img_id=f"PAT_{patient}_{lesion}_{n}.png", biopsed="True")
    row.update(kw)
    return row


def test_pad_ufes_20_fixture(tmp_path, ontology):
    codes = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]
    rows = [_pad_row(p, 10 * p + k, 100 * p + k, codes[(p + k) % 6], fst=str(1 + p % 6) + ".0")
            for p in range(12) for k in range(2)]
    rows += [_pad_row(90, 1, 1, "XYZ"), _pad_row(91, 1, 1, "MEL", fst="9"), _pad_row(92, 1, 1, "BCC", fst=""),
             _pad_row(93, 1, 1, "NEV"), dict(rows[0])]
    images = tmp_path / "imgs"
    for i, r in enumerate(rows[:-2]):  # no file for PAT_93, and rows[0]'s duplicate has its file already
        sub = images / f"imgs_part_{1 + i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (16, 16), (180, 110, 90, 255)).save(sub / r["img_id"])
    meta = write(tmp_path / "metadata.csv", rows, PAD_COLUMNS)
    report = import_pad_ufes_20(meta, images, tmp_path / "out", ontology=ontology, test_fraction=0.5)
    assert {k: v["count"] for k, v in report["skipped"].items()} == {
        "unknown label": 1, "bad skin type": 1, "image file missing": 1, "duplicate image id": 1}
    out = read_csv(tmp_path / "out" / "derm1m.csv")
    assert len(out) == 25 and report["rows_written"] == 25
    by_id = {r["source_id"]: r for r in out}
    first = by_id["PAT_0_0_0"]
    assert first["filename"] == "imgs_part_1/PAT_0_0_0.png" and first["fitzpatrick"] == "1"
    assert first["symptoms"] == "itch, bleeding" and first["body_location"] == "face" and first["gender"] == "female"
    assert by_id["PAT_92_1_1"]["fitzpatrick"] == ""
    splits = {}
    for r in out:
        assert splits.setdefault(r["group_id"], r["split"]) == r["split"]
    assert set(splits.values()) == {"train", "test"}
    labels = {r["disease_label"] for r in out}
    assert labels == {label for _, label in DIAGNOSTIC.values()}
    parsed = list(iter_rows(tmp_path / "out" / "derm1m.csv"))
    assert {p.fitzpatrick for p in parsed} == {0, 1, 2, 3, 4, 5, 6}


def test_loader_reads_a_given_split_and_flags_a_bad_one(tmp_path):
    from tests.data_gen.conftest import COLUMNS, make_row, write_csv

    rows = [make_row("a.jpg", split="val"), make_row("b.jpg", split="Hold out!"), make_row("c.jpg", split="")]
    parsed = list(iter_rows(write_csv(tmp_path / "x.csv", rows, COLUMNS + ["split"])))
    assert [(p.split, p.problem) for p in parsed] == [
        ("val", ""), ("", "split is not a lower-case name"), ("", "")]
    assert parsed[1].detail == "'Hold out!'"


def _per_split_type(rows, split_of, type_of) -> dict:
    counts: dict[str, Counter] = {}
    for r in rows:
        counts.setdefault(split_of(r), Counter())[type_of(r)] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}


def test_fitzpatrick17k_ajl_subset_real_files(tmp_path, ontology):
    meta = read_csv(AJL)
    on_disk = set(os.listdir(AJL.parent / "images"))
    later_twin = set()   # the second of each byte-identical pair, in file order
    order = {r["md5hash"]: i for i, r in enumerate(meta)}
    for r in meta:
        if r["identical_content_as"] and order[r["identical_content_as"]] < order[r["md5hash"]]:
            later_twin.add(r["md5hash"])
    expected = [r for r in meta if f"{r['md5hash']}.jpg" in on_disk and r["md5hash"] not in later_twin]
    report = import_fitzpatrick17k(AJL, AJL.parent / "images", tmp_path, ontology, val_fraction=0.1)
    assert report["rows_read"] == len(meta) == 4087 and len(later_twin) == 3
    assert report["rows_written"] == len(expected) and report["rows_skipped"] == len(meta) - len(expected)
    assert {k: v["count"] for k, v in report["skipped"].items()} == {"byte-identical duplicate": len(later_twin)}
    assert not [k for k, v in report["mapping"].items() if v.startswith("none")] and len(report["mapping"]) == 21
    out = {r["source_id"]: r for r in read_csv(tmp_path / "derm1m.csv")}
    assert set(out) == {r["md5hash"] for r in expected}
    for r in expected:
        o = out[r["md5hash"]]
        assert o["split"] == r["ajl_split"] or (r["ajl_split"] == "train" and o["split"] == "val")
        assert o["fitzpatrick"] == ("" if r["fitzpatrick_scale"] == "-1" else r["fitzpatrick_scale"])
        assert o["fitzpatrick_centaur"] == ("" if r["fitzpatrick_centaur"] == "-1" else r["fitzpatrick_centaur"])
        assert o["three_partition_label"] == r["three_partition_label"]
        twin = out.get(r["identical_content_as"])
        assert twin is None or twin["split"] == o["split"]
    trained = sum(r["ajl_split"] == "train" for r in expected)
    assert 0.07 < sum(o["split"] == "val" for o in out.values()) / trained < 0.13
    per_type = _per_split_type(expected, lambda r: out[r["md5hash"]]["split"],
                               lambda r: "unknown" if r["fitzpatrick_scale"] == "-1" else r["fitzpatrick_scale"])
    assert report["fitzpatrick_by_split"] == per_type and set(per_type) == {"train", "val", "test"}
    md = (tmp_path / "import_report.md").read_text()
    assert "| test | " + " | ".join(str(n) for n in per_type["test"].values()) in md
    # the loader data synth uses reads the skin types back, and the test split is the competition's
    parsed = list(iter_rows(tmp_path / "derm1m.csv"))
    assert Counter(p.fitzpatrick for p in parsed) == Counter(max(int(r["fitzpatrick_scale"]), 0) for r in expected)
    assert sum(p.split == "test" for p in parsed) == sum(r["ajl_split"] == "test" for r in expected)
    # without the nested tree the labels resolve the same (keloid, non-neoplastic, takes the benign copy)
    import_fitzpatrick17k(AJL, AJL.parent / "images", tmp_path / "flat", Ontology.load(ONTOLOGY), val_fraction=0.1)
    assert (tmp_path / "flat" / "derm1m.csv").read_bytes() == (tmp_path / "derm1m.csv").read_bytes()


def test_pad_ufes_20_real_files_match_by_stem_and_split_by_patient(tmp_path):
    meta = read_csv(PAD / "metadata.csv")
    stems = {Path(n).stem for n in os.listdir(PAD / "images")}
    have = [r for r in meta if Path(r["img_id"]).stem in stems]
    report = import_pad_ufes_20(PAD / "metadata.csv", PAD / "images", tmp_path, val_fraction=0.1)
    assert report["rows_read"] == len(meta) == 2298 and report["rows_written"] == len(have) == 733
    assert {k: v["count"] for k, v in report["skipped"].items()} == {"image file missing": len(meta) - len(have)}
    skipped = read_csv(tmp_path / "skipped.csv")
    assert sorted(s["id"] for s in skipped) == sorted(Path(r["img_id"]).stem for r in meta
                                                       if Path(r["img_id"]).stem not in stems)
    assert report["notes"]["images found by stem under another extension"] == len(have)
    out = {r["source_id"]: r for r in read_csv(tmp_path / "derm1m.csv")}
    patient_split = {}
    for r in out.values():
        assert (PAD / "images" / r["filename"]).is_file() and r["filename"].endswith(".jpg")
        assert patient_split.setdefault(r["group_id"], r["split"]) == r["split"]
    assert set(patient_split.values()) == {"train", "val", "test"}
    fst = {Path(r["img_id"]).stem: r["fitspatrick"] for r in have}
    for sid, r in out.items():
        assert r["fitzpatrick"] == (str(int(float(fst[sid]))) if fst[sid] else "")
    per_type = _per_split_type(have, lambda r: out[Path(r["img_id"]).stem]["split"],
                               lambda r: str(int(float(r["fitspatrick"]))) if r["fitspatrick"] else "unknown")
    assert report["fitzpatrick_by_split"] == per_type
    assert report["split_source"].startswith("by group id")


def test_imported_f17k_gives_the_three_way_neoplasm_family(tmp_path, ontology):
    meta = read_csv(AJL)
    rows = [r for label in sorted({r["label"] for r in meta}) for r in [m for m in meta if m["label"] == label][:2]]
    import_fitzpatrick17k(write(tmp_path / "ajl.csv", rows), AJL.parent / "images", tmp_path / "imp", ontology)
    report = synthesize(tmp_path / "imp" / "derm1m.csv", tmp_path / "imp" / "ontology.json", tmp_path / "qa",
                        images_dir=AJL.parent / "images", families=["neoplasm", "diagnosis"],
                        **synth_kwargs(tree_path=None))
    assert report["rows"]["accepted"] == len(rows) == 42, report["rejections"]
    by_image = {f"{r['md5hash']}.jpg": r for r in rows}
    records = [r for r in read_records(tmp_path / "qa" / "qa") if r["family"] == "neoplasm"]
    assert len(records) == len(rows)
    for rec in records:
        src = by_image[rec["image"]]
        assert rec["label"] == rec["options"][rec["answer_index"]] == src["three_partition_label"]
        assert sorted(rec["options"]) == ["benign", "malignant", "non-neoplastic"]
        assert rec["answer"].endswith(f"Answer: {src['three_partition_label']}.")
        assert rec["fitzpatrick"] == max(int(src["fitzpatrick_scale"]), 0) and rec["split"] == src["ajl_split"]
    assert len({r["answer_index"] for r in records}) == 3
    bad = read_csv(tmp_path / "imp" / "derm1m.csv")
    bad[0]["three_partition_label"] = "premalignant"
    parsed = list(iter_rows(write(tmp_path / "bad.csv", bad)))
    assert parsed[0].problem.startswith("three_partition_label not malignant") and not parsed[1].problem
