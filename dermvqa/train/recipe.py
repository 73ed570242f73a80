"""Training recipes: a YAML file (or a shipped recipe's name, dermvqa.configs) plus `--key=value` overrides on
dotted keys, validated against the file; train.deepspeed is found by the same rule."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from dermvqa.configs import find_config


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    path = find_config(path, "recipe")
    recipe = apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides, source=str(path))
    train = recipe.get("train") or {}
    if train.get("deepspeed"):
        train["deepspeed"] = str(find_config(train["deepspeed"], "train.deepspeed"))
    return recipe


def apply_overrides(recipe: dict, overrides, source: str = "recipe") -> dict:
    """`train.lr=2e-4` sets recipe['train']['lr']; the key must already exist in the recipe."""
    recipe = copy.deepcopy(recipe)
    for item in overrides:
        item = item.removeprefix("--")
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = recipe
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override {key!r}: {source} has no section {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"override {key!r}: {source} has no key {leaf!r} (known: {sorted(node)})")
        node[leaf] = _parse(raw)
    return recipe


def _parse(raw: str):
    """YAML value, with `2e-4` read as a number (YAML 1.1 wants `2.0e-4`)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value
