"""The README's first command, `dermvqa quickstart`, end to end in miniature: world -> QA (with `--val-fraction`,
a validation split) -> training -> held-out evaluation -> referral level set on val, measured on test -> example
answers."""
import json

import yaml
from typer.testing import CliRunner

from dermvqa.cli import app
from tests.conftest import REPO


def quickstart(tmp_path, images: int, steps: int, *extra: str):
    """Run the quickstart on a smaller world with the tiny recipe shrunk further; returns (result, run folder)."""
    recipe = yaml.safe_load((REPO / "configs" / "tiny_cpu.yaml").read_text())
    recipe["model"]["tiny"].update(image_size=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1,
                                   vocab_size=300)
    recipe["data"]["max_length"] = 512  # a 300-token vocabulary spells the answers out in more tokens
    recipe["tune"]["tower_pretrain"]["steps"] = steps
    recipe["train"].update(batch_size=16, max_steps=steps, report_to=[])
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["quickstart", "--images", str(images), "--out", str(out),
                                   "--recipe", str(tmp_path / "recipe.yaml"), *extra])
    assert res.exit_code == 0, res.output
    return res, out


def test_quickstart_small_with_a_referral(tmp_path, monkeypatch):
    import dermvqa.infer.generate as generate

    loads, load_model = [], generate.load_model
    monkeypatch.setattr(generate, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    res, out = quickstart(tmp_path, 160, 3, "--val-fraction", "0.1")
    assert len(loads) == 1  # eval, the referral on val and test, and the example answers share one load
    splits = json.loads((out / "world" / "report.json").read_text())["splits"]
    assert set(splits) == {"train", "val", "test"} and splits["val"] < splits["test"] < splits["train"]
    assert "Held-out metrics:" in res.output and "Example answers on held-out images" in res.output
    alert = json.loads((out / "train" / "model" / "dermvqa_alert.json").read_text())
    assert alert["fitted_on"] == "val" and alert["n_malignant"] >= 1 and alert["sensitivity"] >= 0.9
    assert f"malignancy referral (level {alert['threshold']:.3f}, set on {alert['n_images']} val images" \
        in res.output and "test sensitivity" in res.output


def test_quickstart_without_validation_split_says_how_to_set_a_referral(tmp_path):
    res, out = quickstart(tmp_path, 48, 1)
    assert set(json.loads((out / "world" / "report.json").read_text())["splits"]) == {"train", "test"}
    assert "malignancy referral: not set (no validation split; --val-fraction 0.1 sets one)" in res.output
    assert not (out / "train" / "model" / "dermvqa_alert.json").exists()
    ood = json.loads((out / "train" / "model" / "dermvqa_ood.json").read_text())  # configs/tiny_cpu.yaml's choice
    assert (ood["pooling"], ood["image_stats"], ood["quantile"]) == ("projected_mean", True, 0.995)
    assert "out-of-distribution detector: the recipe's ood section (no reference photos" in res.output
