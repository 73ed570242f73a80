import pytest

from dermvqa.train.recipe import apply_overrides, load_recipe
from tests.conftest import REPO


def test_overrides_parse_yaml_values_on_dotted_keys():
    r = apply_overrides({"train": {"lr": 1e-3, "curriculum": []}, "data": {"families": "all"}},
                        ["--train.lr=2e-4", "data.families=[diagnosis, yes_no]",
                         "train.curriculum=[{families: all, epochs: 2}]"])
    assert r["train"]["lr"] == 2e-4 and r["data"]["families"] == ["diagnosis", "yes_no"]
    assert r["train"]["curriculum"] == [{"families": "all", "epochs": 2}]


@pytest.mark.parametrize("bad, msg", [("train.lrr=1", "no key 'lrr'"), ("nope.lr=1", "no section 'nope'"),
                                      ("train.lr", "key=value")])
def test_unknown_keys_and_malformed_overrides_are_errors(bad, msg):
    with pytest.raises((KeyError, ValueError), match=msg):
        apply_overrides({"train": {"lr": 1}}, [bad])


def test_shipped_tiny_recipe_loads():
    r = load_recipe(REPO / "configs" / "tiny_cpu.yaml", ["train.seed=5"])
    assert r["train"]["seed"] == 5 and r["model"]["kind"] == "tiny"


def test_missing_recipe_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_recipe(tmp_path / "nothere.yaml")
