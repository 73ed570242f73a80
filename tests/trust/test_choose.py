"""The detector chooser (dermvqa/trust/choose.py): each candidate's quantile, thresholds, abstention and flagged
shares against a direct computation from dermvqa.trust.ood.fit, the selection rule (worst outside set, ties to
the higher q), the fixed selection samples, the reference photo lists, and `dermvqa ood-choose` on a tiny model:
what it writes, and its one-line refusals."""
import csv
import json
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dermvqa.trust.choose import QUANTILES, candidate_rows, choose, selection_sets
from dermvqa.trust.features import POOLINGS
from dermvqa.trust.ood import META_FILE, TENSORS_FILE, fit, load_summary
from dermvqa.trust.photos import check_readable, list_photos, photo_record
from tests.conftest import PAD_PHOTO


def fake_features(n: int, shift: float, seed: int) -> dict:
    """Every pooling's features and the image statistics: Gaussian, the statistics moved by `shift`."""
    g = torch.Generator().manual_seed(seed)
    out = {p: torch.randn(n, 6, generator=g, dtype=torch.float64) for p in POOLINGS}
    out["stats"] = torch.randn(n, 4, generator=g, dtype=torch.float64) + shift
    return out


def test_rows_equal_a_direct_fit_and_the_rule_picks_the_most_flagged():
    train = fake_features(260, 0.0, 0)
    labels = ["a", "b"] * 100  # 200 fitted images, 60 held out
    scored = {"near": fake_features(80, 0.7, 1), "far": fake_features(80, 4.0, 2), "val": fake_features(80, 0.0, 3)}
    reference = fake_features(120, 0.7, 4)
    rows = candidate_rows(train, labels, scored, "val", ["near", "far"], reference, 0.05)
    assert {(r["pooling"], r["image_stats"], r["outlier_head"]) for r in rows} <= {
        (p, s, h) for p in POOLINGS for s in (False, True) for h in (False, True)} and len(rows) >= 12
    row = next(r for r in rows if r["pooling"] == "tower_mean" and r["image_stats"] and r["outlier_head"])
    x = torch.cat([train["tower_mean"], train["stats"]], 1)
    ref = torch.cat([reference["tower_mean"], reference["stats"]], 1)
    s = fit(x[:200], labels, x[200:], outside=ref)
    held_g, held_h = s.scores(x[200:]).numpy(), s.outlier_scores(x[200:]).numpy()
    flags = {}
    for q in QUANTILES:  # the smallest q whose abstention on "val" is within the cap
        t, th = np.quantile(held_g, q), np.quantile(held_h, q)
        for k, f in scored.items():
            z = torch.cat([f["tower_mean"], f["stats"]], 1)
            flags[k] = (s.scores(z).numpy() > t) | (s.outlier_scores(z).numpy() > th)
        if flags["val"].mean() <= 0.05:
            break
    assert row["quantile"] == q and row["threshold"] == pytest.approx(t)
    assert row["outlier_threshold"] == pytest.approx(th)
    assert row["abstain_inside"] == pytest.approx(flags["val"].mean()) and row["abstain_inside"] <= 0.05
    assert row["flagged_near"] == pytest.approx(flags["near"].mean())
    assert row["worst_flagged"] == min(row["flagged_near"], row["flagged_far"])
    best = choose(rows)
    assert all(r["worst_flagged"] <= best["worst_flagged"] for r in rows)
    assert best["image_stats"]  # only the statistics see the shift
    assert candidate_rows(train, labels, scored, "val", ["near"], None, -1.0) == []
    assert choose([]) is None


def test_ties_go_to_the_higher_quantile_then_the_margin():
    base = {"worst_flagged": 1.0, "abstain_inside": 0.0}
    rows = [{**base, "quantile": 0.95, "margin": 9.0}, {**base, "quantile": 0.99, "margin": 2.0},
            {**base, "quantile": 0.99, "margin": 3.0}, {**base, "worst_flagged": 0.5, "quantile": 0.995, "margin": 9.0}]
    assert choose(rows) is rows[2]


def test_selection_samples_are_fixed_and_the_head_never_sees_them(tmp_path):
    first = [tmp_path / f"f{i:03d}.jpg" for i in range(50)]
    second = [tmp_path / f"s{i:03d}.jpg" for i in range(30)]
    scored, head = selection_sets({"atlas": first[::-1] + first[:5], "other": second}, 10, 20)
    # the samples the former scripts/choose_ood.py drew: seed 0 from each sorted set, seed 1 from the first set's rest
    assert scored["atlas"] == sorted(random.Random(0).sample(first, 10))
    assert scored["other"] == sorted(random.Random(0).sample(second, 10))
    rest = sorted(set(first) - set(scored["atlas"]))
    assert head == sorted(random.Random(1).sample(rest, 20)) and not set(head) & set(scored["atlas"])
    assert selection_sets({"atlas": first}, 100, 0) == ({"atlas": first}, [])
    with pytest.raises(ValueError, match="no reference photos"):
        selection_sets({}, 10, 20)


def test_reference_photos_from_a_folder_a_glob_or_a_csv_column(tmp_path):
    (tmp_path / "ref" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG"):
        Image.new("RGB", (20, 20), (200, 90, 40)).save(tmp_path / "ref" / name)
    (tmp_path / "ref" / "notes.txt").write_text("not a photo")
    both = [tmp_path / "ref" / "a.jpg", tmp_path / "ref" / "sub" / "b.PNG"]
    assert list_photos(str(tmp_path / "ref")) == both
    assert list_photos(str(tmp_path / "ref" / "**" / "*.*g")) == [both[0]]  # the glob is case-sensitive
    with open(tmp_path / "ref" / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label"], ["sub/b.PNG", "x"], ["a.jpg", "y"]])
    assert list_photos(str(tmp_path / "ref" / "list.csv"), "file") == both
    with pytest.raises(ValueError, match="no column 'path' .*--reference-column"):
        list_photos(str(tmp_path / "ref" / "list.csv"))
    (tmp_path / "bad.csv").write_text("path\nmissing.jpg\n")
    with pytest.raises(FileNotFoundError, match="bad.csv line 2: path .*missing.jpg does not exist"):
        list_photos(str(tmp_path / "bad.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no photos found"):
        list_photos(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="not a folder, a glob or a .csv file"):
        list_photos(str(tmp_path / "nowhere"))
    (tmp_path / "ref" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: not a readable photo"):
        check_readable(list_photos(str(tmp_path / "ref")))
    record = photo_record(both)
    assert record["count"] == 2 and record["folder"] == str((tmp_path / "ref").resolve())
    assert record == photo_record(both[::-1]) and record != photo_record(both[:1])


@pytest.fixture(scope="module")
def setup(chatty_model_dir, tmp_path_factory):
    """A model folder, its QA folder (80 train and 20 val synthetic-world images) and 40 reference photos of
    another kind (flat colours and noise at another size), plus the PAD-UFES-20 photo."""
    from data_gen.records import QARecord, write_parquet
    from data_gen.synthetic_world import CONDITIONS, build_world

    root = tmp_path_factory.mktemp("choose")
    world = root / "world"
    build_world(world, n_images=100, progress=False)
    write_parquet([QARecord(id=f"r{i}", image=f"synthetic/lesion_{i:05d}.png", family="diagnosis",
                            label=CONDITIONS[i % 8].label, question="What is the diagnosis?",
                            answer=CONDITIONS[i % 8].label, answer_type="open", split="train" if i < 80 else "val")
                   for i in range(100)], root / "qa" / "part.parquet")
    rng = np.random.default_rng(0)
    (root / "ref").mkdir()
    for i in range(40):
        pixels = rng.integers(0, 256, (90, 120, 3)) if i % 2 else np.full((90, 120, 3), rng.integers(0, 256, 3))
        Image.fromarray(pixels.astype(np.uint8)).save(root / "ref" / f"photo_{i:02d}.jpg")
    shutil.copy(PAD_PHOTO, root / "ref")
    return chatty_model_dir, world, root


def _run(capsys, *args) -> tuple[int, str, str]:
    """`dermvqa ARGS` through the entry point: (exit code, stdout, stderr)."""
    from dermvqa.cli import app

    code = app.run(list(args))
    return code, *capsys.readouterr()


def _choose(capsys, model_dir, world, root, *extra):
    return _run(capsys, "ood-choose", "--model", str(model_dir), "--qa", str(root / "qa"), "--images",
                str(world / "images"), "--limit", "10", "--outside-limit", "20", "--device", "cpu", *extra)


def test_ood_choose_writes_the_chosen_detector_and_what_it_saw(setup, tmp_path, capsys):
    source, world, root = setup
    model_dir = shutil.copytree(source, tmp_path / "model")
    code, out, err = _choose(capsys, model_dir, world, root, "--reference", str(root / "ref"), "--max-abstain", "0.1")
    assert code == 0, err
    assert "<- chosen" in out and f"wrote {model_dir / META_FILE}" in out
    meta = json.loads((model_dir / META_FILE).read_text())
    sel = meta["selection"]
    assert (meta["pooling"], meta["image_stats"]) == (sel["pooling"], sel["image_stats"])
    assert meta["threshold"] == pytest.approx(sel["threshold"], abs=1e-4)  # refitted at the chosen quantile
    assert sel["inside"] == "held-out" and sel["outside"] == [str(root / "ref")] and sel["abstain_inside"] <= 0.1
    ref = list_photos(str(root / "ref"))
    assert sel["photos"][str(root / "ref")] == photo_record(sorted(random.Random(0).sample(ref, 10)))
    assert ("head references" in sel["photos"]) == sel["outlier_head"] == ("outlier_threshold" in meta)
    s = load_summary(model_dir)
    assert s.meta["images"] == 80 and s.meta["n_fit"] + s.meta["n_held_out"] == 80
    assert not list(model_dir.glob(".dermvqa_ood*"))
    code, _, err = _choose(capsys, model_dir, world, root, "--reference", str(root / "ref"), "--inside-val", "val",
                           "--max-abstain", "0.3", "--no-head")
    assert code == 0, err
    sel = json.loads((model_dir / META_FILE).read_text())["selection"]
    assert sel["inside"] == "val" and sel["photos"]["val"]["count"] == 10 and not sel["outlier_head"]
    before = (model_dir / TENSORS_FILE).read_bytes(), (model_dir / META_FILE).read_text()
    code, _, err = _choose(capsys, model_dir, world, root, "--reference", str(root / "ref"), "--max-abstain", "0")
    assert code == 2 and err.splitlines()[-1].startswith("error: no candidate keeps in-distribution abstention")
    assert ((model_dir / TENSORS_FILE).read_bytes(), (model_dir / META_FILE).read_text()) == before


def test_ood_choose_refuses_in_one_line(setup, tmp_path, capsys):
    from data_gen.records import QARecord, write_parquet

    model_dir, world, root = setup
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    shutil.copy(PAD_PHOTO, tmp_path / "broken")
    (tmp_path / "broken" / "cut.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    write_parquet([QARecord(id="v", image="synthetic/lesion_00000.png", family="diagnosis", label="x",
                            question="q?", answer="x", answer_type="open", split="val")], tmp_path / "qa" / "v.parquet")
    ref = ["--reference", str(root / "ref")]
    cases = [(["--reference", str(tmp_path / "empty")], "no photos found"),
             (["--reference", str(tmp_path / "broken"), "--no-head"],
              f"{tmp_path / 'broken' / 'cut.jpg'}: not a readable photo"),
             (["--reference", str(world / "images")], "of its photos are the model's own images"),
             (ref + ["--inside-val", "test"], "must stay unseen"),
             (ref + ref, "the same set is given twice"),
             (ref + ["--limit", "40"], "the outlier head needs 2")]
    for args, message in cases:
        code, _, err = _choose(capsys, model_dir, world, root, *args)
        assert code == 2 and err.startswith("error: ") and message in err.splitlines()[-1], (args, err)
    for qa, model, message in ((tmp_path / "qa", model_dir, "no train-split records"),
                               (root / "qa", tmp_path / "empty", "not a model folder (no config.json)")):
        code, _, err = _run(capsys, "ood-choose", "--model", str(model), "--qa", str(qa), "--images",
                            str(world / "images"), *ref)
        assert code == 2 and message in err.splitlines()[-1], err
