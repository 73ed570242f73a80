"""The run manifest: hashes recomputed here from the files, deterministic metrics.json, a changed model refused."""
import hashlib
import json
import platform
import shutil
from pathlib import Path

import pytest

from dermvqa.eval import run_eval
from dermvqa.eval.manifest import benchmark_files
from dermvqa.model.folder import files_sha256

FAST = {"max_new_tokens": 6, "n_boot": 20, "plots": False, "blind": False}
HAM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ham10000"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_manifest_names_model_benchmark_and_libraries(varied_model_dir, qa_world, tmp_path):
    import peft
    import torch
    import transformers
    from transformers import AutoProcessor

    m = run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path / "a", limit=3, **FAST)
    man = m["manifest"]
    parquet = sorted((qa_world / "qa").rglob("*.parquet"))
    assert man["benchmark"]["sha256"] == sha(b"".join(p.read_bytes() for p in parquet))
    assert man["benchmark"]["items"] == 37 and man["benchmark"]["files"] == [str(p) for p in parquet]
    weights = {p.name: sha(p.read_bytes()) for p in Path(varied_model_dir).glob("*.safetensors")}
    assert weights and man["adapter"]["weights_sha256"] == weights
    assert man["adapter"]["spec"] == f"llava:{varied_model_dir}" and man["adapter"]["kind"] == "llava"
    template = AutoProcessor.from_pretrained(varied_model_dir).chat_template
    assert man["adapter"]["prompt_template"]["sha256"] == sha(template.encode())
    assert man["decoding"] == {"decoding": "greedy", "mode": "generate", "max_new_tokens": 6,
                               "likelihood_reduce": "sum"}
    assert man["libraries"] == {"python": platform.python_version(), "torch": torch.__version__,
                                "transformers": transformers.__version__, "peft": peft.__version__}
    assert m["answer_failures"] == {"image": {}}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Manifest" in report and man["benchmark"]["sha256"] in report and next(iter(weights.values())) in report

    run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path / "b", limit=3, **FAST)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path / "a", limit=3, **FAST)   # resumed: no model loaded
    assert json.loads((tmp_path / "a" / "run_info.json").read_text())["device"] is None
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_ham10000_benchmark_hash_covers_both_csvs():
    files = benchmark_files(f"ham10000:{HAM}")
    assert [p.name for p in files] == ["HAM10000_metadata.csv", "dermamnist_split.csv"]
    assert files_sha256(files) == sha((HAM / "HAM10000_metadata.csv").read_bytes()
                                      + (HAM / "dermamnist_split.csv").read_bytes())


def test_single_file_benchmark_hash_is_the_file(tmp_path):
    f = tmp_path / "MM-Skin_test.csv"
    f.write_text("image,question,answer\n")
    assert benchmark_files(f"mmskin:{f}") == [f] and files_sha256([f]) == sha(f.read_bytes())


def test_rerun_with_changed_weights_is_refused(varied_model_dir, qa_world, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(varied_model_dir, model)
    run_eval(model, f"qa:{qa_world}", tmp_path / "run", limit=2, **FAST)
    weights = next(model.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + torch.ones_like(tensors[name])
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="made by another model .*weights_sha256"):
        run_eval(model, f"qa:{qa_world}", tmp_path / "run", limit=3, **FAST)
    with pytest.raises(ValueError, match="made by another model .*weights_sha256"):  # nothing left to answer:
        run_eval(model, f"qa:{qa_world}", tmp_path / "run", limit=2, **FAST)     # no load, the hashes still checked
