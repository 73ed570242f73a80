"""`dermvqa export`: LoRA merged offline into a folder that plain transformers loads and that generates alike."""
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from dermvqa.train.export import export
from dermvqa.train.trainer import run_training
from tests.train.tiny_run import LORA, make_world, recipe

QUESTIONS = ["What is the most likely diagnosis?", "Is this Psoriasis (plaque)?"]
# Runs in a fresh interpreter that never imports dermvqa (asserted at the end).
PLAIN = """
import json, sys, torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
folder, images, questions = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
out = []
for path, q in zip(images, questions):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    batch = processor(images=Image.open(path).convert("RGB"), text=text, add_special_tokens=False,
                      return_tensors="pt")
    ids = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    out.append(ids[0, batch["input_ids"].shape[1]:].tolist())
assert not any(m == "dermvqa" or m.startswith("dermvqa.") for m in sys.modules)
print(json.dumps(out))
"""


def _generate(model, processor, images, questions):
    out = []
    for path, q in zip(images, questions):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        batch = processor(images=Image.open(path).convert("RGB"), text=text, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=8, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        out.append(ids[0, batch["input_ids"].shape[1]:].tolist())
    return out, batch


def test_exported_lora_model_loads_plain_and_generates_the_same(tmp_path):
    from peft import PeftModel

    world = make_world(tmp_path / "w")
    final = run_training(recipe(world, tmp_path / "run", epochs=4, extra=("tune.mode=lora", LORA,
                                                                          "train.save_steps=12")))
    images = [str(world / "images" / "0.png"), str(world / "images" / "1.png")]
    base = LlavaForConditionalGeneration.from_pretrained(tmp_path / "run" / "init").eval()
    processor = AutoProcessor.from_pretrained(final)
    with torch.no_grad():
        _, batch = _generate(base, processor, images[:1], QUESTIONS[:1])
        base_logits = base(**batch).logits
    peft_model = PeftModel.from_pretrained(base, final).eval()
    before, _ = _generate(peft_model, processor, images, QUESTIONS)

    out = export(final, tmp_path / "exported", dtype="float32")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()
    run = subprocess.run([sys.executable, "-c", PLAIN, str(out), json.dumps(images), json.dumps(QUESTIONS)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    after = json.loads(run.stdout.strip().splitlines()[-1])
    assert after == before and all(len(t) > 0 for t in after)

    merged = LlavaForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        assert (merged(**batch).logits - base_logits).abs().max() > 1e-4  # the adapter really was merged in
    card = (out / "README.md").read_text()
    for needle in ("license: cc-by-nc-4.0", "CC BY-NC 4.0", "## Intended use", "## Limitations", "mode: lora",
                   "records: 24", "LoRA adapter"):
        assert needle in card, needle
    assert (out / "recipe.yaml").is_file()
    trained = load_file(final / "adapter_model.safetensors")
    key = next(k for k in trained if k.endswith("multi_modal_projector.linear_1.weight"))
    assert torch.equal(merged.model.multi_modal_projector.linear_1.weight, trained[key])  # the trained copy, not init
    with pytest.raises(FileExistsError):
        export(final, out)
    # a mid-run checkpoint exports the same way (the processor is saved into each checkpoint)
    mid = export(tmp_path / "run" / "checkpoints" / "checkpoint-12", tmp_path / "mid", dtype="float32")
    LlavaForConditionalGeneration.from_pretrained(mid)
    assert AutoProcessor.from_pretrained(mid).image_token == processor.image_token


def test_export_refuses_incomplete_sources(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match="neither adapter_config.json nor config.json"):
        export(tmp_path / "a", tmp_path / "o1")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match="half-written"):
        export(tmp_path / "b", tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_export_command_reports_bad_source(tmp_path):
    from typer.testing import CliRunner

    from dermvqa.cli import app

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "neither adapter_config.json nor config.json" in str(res.exception)
    (tmp_path / "run" / "model").mkdir(parents=True)  # a run folder given instead of its model: say where it is
    res = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and f"the run's final model is {tmp_path / 'run' / 'model'}" in str(res.exception)


def test_export_carries_what_reports_need_and_reports_alike(trusted_model_dir, tmp_path):
    """The label vocabulary, trained families, out-of-distribution summary and referral level travel with the
    export, so a report from the exported folder abstains, refers and skips sections as the source's did."""
    import csv
    import shutil

    from typer.testing import CliRunner

    from dermvqa.cli import app
    from dermvqa.trust.alert import fit_alert
    from dermvqa.infer.generate import load_model
    from dermvqa.infer.report import build_report, model_trust
    from dermvqa.model.labels import load_labels

    source, world = trusted_model_dir
    src = shutil.copytree(source, tmp_path / "src")
    rows = list(csv.DictReader(open(world / "derm1m.csv", encoding="utf-8")))
    model, processor = load_model(src, device="cpu")
    fit_alert(model, processor, [{"image": r["filename"], "family": "diagnosis", "label": r["disease_label"]}
                                 for r in rows[:40]], world / "images", load_labels(src), src)
    res = CliRunner().invoke(app, ["export", str(src), "--out", str(tmp_path / "out"), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert "data_summary.json, dermvqa_alert.json, dermvqa_labels.json, dermvqa_ood.json" in res.output
    assert "note:" not in res.output

    def report(folder, name):
        m, p = load_model(folder, device="cpu")
        return build_report(m, p, Image.open(world / "images" / name), load_labels(folder), **model_trust(folder))

    for r in rows[40:44]:
        a, b = report(src, r["filename"]), report(tmp_path / "out", r["filename"])
        assert a["not_assessed"] == b["not_assessed"] and a["not_assessed"]  # untrained sections still skipped
        assert b["ood"] is not None and abs(a["ood"]["score"] - b["ood"]["score"]) < 1e-3
        assert a["ood"]["unlike_training"] == b["ood"]["unlike_training"] and a["summary"] == b["summary"]
        assert (a["malignancy"] is None) == (b["malignancy"] is None) == a["ood"]["unlike_training"]
        if a["malignancy"]:
            assert b["malignancy"]["threshold"] == a["malignancy"]["threshold"]
            assert a["malignancy"]["alert"] == b["malignancy"]["alert"] and a["next_step"] == b["next_step"]

    bare = tmp_path / "bare"  # a folder without them: the export says what its reports will lack
    shutil.copytree(source, bare, ignore=shutil.ignore_patterns("dermvqa_*", "data_summary.json"))
    res = CliRunner().invoke(app, ["export", str(bare), "--out", str(tmp_path / "bare_out")])
    assert res.exit_code == 0, res.output
    assert res.output.count("note:") == 4 and "never abstain" in res.output and "alert-fit" in res.output
