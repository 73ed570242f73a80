"""Written files follow the umask (0644 under the default 022), and model folders hold no pickle file.

Atomic writers start from mkstemp (0600) and mkdtemp (0700); a model folder that only its owner can
read cannot be served by another user or container.
"""
import os
import stat
from pathlib import Path

import pytest

from data_gen.records import write_parquet
from atomic_files import write_text_atomic
from dermvqa.infer.generate import load_model
from dermvqa.model.folder import save_model_folder
from dermvqa.train.export import export
from dermvqa.train.trainer import run_training
from tests.train.tiny_run import make_world, recipe

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_trained_and_exported_model_folders_are_world_readable_and_pickle_free(tmp_path, umask):
    umask(0o022)
    world = make_world(tmp_path / "w", n=8)
    run = tmp_path / "run"
    final = run_training(recipe(world, run, epochs=1))
    exported = export(final, tmp_path / "export", "float32")
    built = save_model_folder(*load_model(final, device="cpu"), tmp_path / "built", "BUILD_INFO.json", {})
    for folder in (run / "init", final, exported, built):  # tiny start model, trained, export, build/convert writer
        entries = [folder, *folder.rglob("*")]
        files = {p.relative_to(folder).as_posix(): _mode(p) for p in entries if p.is_file()}
        assert "model.safetensors" in files and set(files.values()) == {0o644}, (folder, files)
        assert {_mode(p) for p in entries if p.is_dir()} == {0o755}
        assert not [name for name in files if Path(name).suffix in PICKLE_SUFFIXES], files
    for name in ("recipe.yaml", "data_summary.json", "train_log.json"):  # the run folder's own files
        assert _mode(run / name) == 0o644, name


def test_atomic_writers_follow_a_stricter_umask(tmp_path, umask):
    umask(0o027)
    write_text_atomic(tmp_path / "a.json", "{}")
    write_parquet([], tmp_path / "qa" / "part.parquet")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "qa" / "part.parquet") == 0o640
