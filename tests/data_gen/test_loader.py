import pytest

from data_gen.derm1m import CSVFormatError, iter_rows
from data_gen.synth import synthesize
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import COLUMNS, make_row, synth_kwargs, write_csv


def test_real_sample_placeholders_become_missing():
    rows = list(iter_rows(SAMPLE_CSV, chunk_rows=7))
    assert len(rows) == 100 and [r.index for r in rows] == list(range(100))
    first = rows[0]
    assert first.disease_label == "" and first.locations == [] and first.age is None and first.gender is None
    assert not any("no visual concepts" in c for r in rows for c in r.concepts)
    assert any(r.age == 80 and r.gender == "female" for r in rows)
    assert any(r.fitzpatrick == 2 for r in rows)  # "with FST2 skin tone" in a public caption


def test_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [make_row("a.png")], [c for c in COLUMNS if c != "skin_concept"])
    with pytest.raises(CSVFormatError, match=r"bad\.csv.*skin_concept"):
        list(iter_rows(path))
    with pytest.raises(CSVFormatError, match="skin_concept"):
        synthesize(path, ONTOLOGY, tmp_path / "out", **synth_kwargs())


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(CSVFormatError, match="not found"):
        list(iter_rows(tmp_path / "nope.csv"))


def test_non_utf8_row_is_counted_not_fatal(tmp_path):
    path = write_csv(tmp_path / "x.csv", [make_row("a.png"), make_row("b.png", caption="Red plaques CAFE_MARK.")])
    path.write_bytes(path.read_bytes().replace(b"CAFE_MARK", b"caf\xe9"))
    rows = list(iter_rows(path))
    assert rows[0].problem == "" and rows[1].problem == "non-UTF-8 bytes" and "caption" in rows[1].detail
    report = synthesize(path, ONTOLOGY, tmp_path / "out", **synth_kwargs())
    assert report["rejections"]["non-UTF-8 bytes"]["count"] == 1
    assert "row 2 b.png" in report["rejections"]["non-UTF-8 bytes"]["examples"][0]
    with pytest.raises(ValueError, match=r"data row 2 \(b\.png\).*non-UTF-8"):
        synthesize(path, ONTOLOGY, tmp_path / "strict", **synth_kwargs(strict=True))


def test_empty_caption_is_a_reasoned_skip(tmp_path):
    path = write_csv(tmp_path / "x.csv", [make_row("a.png"), make_row("b.png", caption="")])
    report = synthesize(path, ONTOLOGY, tmp_path / "out", **synth_kwargs())
    assert report["rows"] == {"read": 2, "accepted": 1}
    assert report["rejections"]["empty caption (cannot check what the image shows)"]["count"] == 1


def test_fitzpatrick_column_is_carried_and_checked(tmp_path):
    cols = COLUMNS + ["fitzpatrick"]
    path = write_csv(tmp_path / "x.csv", [make_row("a.png", fitzpatrick="5"), make_row("b.png", fitzpatrick="9")], cols)
    rows = list(iter_rows(path))
    assert rows[0].fitzpatrick == 5 and rows[1].problem == "fitzpatrick not in 1-6"


def test_malformed_csv_names_file(tmp_path):
    path = write_csv(tmp_path / "x.csv", [make_row("a.png")])
    with open(path, "a", encoding="utf-8") as f:
        f.write('"unterminated,' + "x," * 30 + "\n")
    with pytest.raises(CSVFormatError, match=r"x\.csv"):
        list(iter_rows(path))
