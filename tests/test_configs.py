"""Shipped configs: pyproject.toml lists every package folder (configs/ installs as dermvqa.configs), and a config
argument is a file when one exists, else a shipped name found from any folder."""
import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

from dermvqa.configs import find_config, shipped_names, shipped_root
from dermvqa.train.recipe import load_recipe
from tests.conftest import REPO


def test_pyproject_lists_every_package_folder():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    tops = sorted({p.split(".")[0] for p in listed})
    found = set(find_namespace_packages(str(REPO), include=[f"{t}*" for t in tops], exclude=["*.__pycache__"]))
    found |= {"dermvqa.configs"} | {f"dermvqa.configs.{p}" for p in find_namespace_packages(str(REPO / "configs"))}
    assert found - listed == set(), "package folders pyproject.toml does not list"
    assert listed - found == set(), "listed packages with no folder"
    assert setup["package-dir"] == {"dermvqa.configs": "configs"}


def test_shipped_root_is_the_configs_folder():
    assert shipped_root().resolve() == (REPO / "configs").resolve()
    assert {"tiny_cpu", "qwen2.5-7b/stage2_lora", "deepspeed/zero2"} <= set(shipped_names())


@pytest.mark.parametrize("name, shipped", [
    ("tiny_cpu", "tiny_cpu.yaml"), ("tiny_cpu.yaml", "tiny_cpu.yaml"),
    ("qwen2.5-7b/stage2_lora", "qwen2.5-7b/stage2_lora.yaml"),
    ("configs/qwen2.5-7b/stage2_lora.yaml", "qwen2.5-7b/stage2_lora.yaml"),
    ("deepspeed/zero2", "deepspeed/zero2.json"), ("configs/deepspeed/zero2.json", "deepspeed/zero2.json")])
def test_a_name_finds_the_shipped_config_from_any_folder(name, shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(name) == shipped_root() / shipped


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny_cpu").write_text("mine: 1\n")
    assert find_config("tiny_cpu") == Path("tiny_cpu")
    assert load_recipe(tmp_path / "tiny_cpu") == {"mine": 1}


def test_an_unknown_name_is_one_line_naming_it_and_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_recipe("qwen2.5-7b/stage9")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("recipe not found: qwen2.5-7b/stage9 is neither a file nor a shipped config")
    assert "qwen2.5-7b/stage2_lora" in message and "tiny_cpu" in message


def test_recipe_deepspeed_files_resolve_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("qwen2.5-7b/stage2_lora")  # its train.deepspeed: configs/deepspeed/zero3.json
    assert recipe["train"]["deepspeed"] == str(shipped_root() / "deepspeed" / "zero3.json")
    assert load_recipe("tiny_cpu", ["train.deepspeed=deepspeed/zero2"])["train"]["deepspeed"] == \
        str(shipped_root() / "deepspeed" / "zero2.json")
    assert load_recipe("tiny_cpu")["train"]["deepspeed"] is None
    with pytest.raises(FileNotFoundError, match="^train.deepspeed not found: zero9.json is neither"):
        load_recipe("tiny_cpu", ["train.deepspeed=zero9.json"])
