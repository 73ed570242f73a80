"""DermLIP-PanDerm -> BEiT against the authors' golden outputs; CLI conversion, plain transformers loading, LLaVA
build, training with the PanDerm stage-1 recipe, chat, llava:/hf: eval, the processor on real photos, errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, BeitModel, LlavaForConditionalGeneration

from dermvqa.cli import app
from dermvqa.model.dermlip import convert_dermlip
from dermvqa.model.panderm import HEAD_FILE, PanDermError, PanDermTower
from dermvqa.model.processor import CLIP_MEAN, CLIP_STD
from dermvqa.train.preflight import check_recipe
from dermvqa.train.recipe import load_recipe
from dermvqa.train.trainer import with_defaults
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"
GOLDEN = SHARED / "dermlip-panderm"
PHOTOS = [SHARED / "pad-ufes-20" / "examples" / "PAT_8_15_820.png", SHARED / "ham10000" / "images" / "ISIC_0024306.jpg"]
RECIPES = REPO / "configs" / "qwen2.5-7b"
HUB_ID = "hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256"


def tiny_state() -> dict:
    """The golden tiny tower plus text-tower keys, as a full DermLIP-PanDerm checkpoint holds them."""
    return {**load_file(GOLDEN / "tiny_tower.safetensors"), "text.proj.weight": torch.ones(32, 16),
            "logit_scale": torch.tensor(4.6)}


def checkpoint(folder: Path, state: dict | None = None, weights: str = "open_clip_model.safetensors") -> Path:
    """A folder like the hub's: open_clip_config.json (tiny: 4 heads of 16) + weights in the checkpoint's layout."""
    folder.mkdir(parents=True)
    state = tiny_state() if state is None else state
    if weights.endswith(".bin"):
        torch.save(state, folder / weights)
    else:
        save_file(state, folder / weights)
    cfg = {"embed_dim": 32, "vision_cfg": {"pretrain_path": "panderm_bb_data6_checkpoint-499.pth", "head_width": 16},
           "text_cfg": {"hf_model_name": "neuml/pubmedbert-base-embeddings", "context_length": 256}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The tiny checkpoint converted through the `dermvqa convert-dermlip` entry point."""
    tmp = tmp_path_factory.mktemp("panderm")
    out = tmp / "tower"
    assert app.run(["convert-dermlip", str(checkpoint(tmp / "src")), "--out", str(out)]) == 0
    return out


def max_errors(folder: Path, dtype) -> dict:
    golden, suffix = load_file(GOLDEN / "golden.safetensors"), "_f64" if dtype == torch.float64 else ""
    tower = AutoModel.from_pretrained(folder, dtype=dtype).eval()  # plain transformers: no dermvqa code
    assert type(tower) is BeitModel
    zero_shot = PanDermTower.from_pretrained(folder, dtype=dtype)
    with torch.no_grad():
        hidden = tower(pixel_values=golden["pixel_values"].to(dtype), output_hidden_states=True).hidden_states
        out = zero_shot(golden["pixel_values"].to(dtype))
    assert len(hidden) == 4 and hidden[0].dtype == dtype
    errors = {f"hidden_states[{i}]": (h - golden[f"hidden_states{suffix}"][i]).abs().max().item()
              for i, h in enumerate(hidden)}
    for name, ours in (("tokens_normed", out.last_hidden_state), ("pooled", out.pooled),
                       ("embedding", out.image_embeds)):
        errors[name] = (ours - golden[name + suffix]).abs().max().item()
    return errors


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_converted_tower_reproduces_the_authors_outputs(converted, dtype, tol):
    errors = max_errors(converted, dtype)
    assert len(errors) == 7 and max(errors.values()) <= tol, errors
    golden = load_file(GOLDEN / "golden.safetensors")["hidden_states_f64"]
    assert (golden[1] - golden[2]).abs().max() > 0.1  # blocks really differ: a misplaced weight would show


def test_built_llava_reads_the_penultimate_patch_tokens_and_trains_chats_and_evaluates(converted, tmp_path):
    from dermvqa.eval.runner import run_eval
    from dermvqa.infer.chat import ChatSession
    from dermvqa.infer.generate import load_model
    from dermvqa.train.trainer import run_training
    from tests.model.test_builder import make_llm
    from tests.train.tiny_run import make_world

    llm, world = make_llm(tmp_path / "llm"), make_world(tmp_path / "world", n=4)
    assert app.run(["build", "--vision", str(converted), "--llm", str(llm), "--out", str(tmp_path / "llava"),
                    "--dtype", "float32"]) == 0
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    cfg = model.config
    assert (cfg.vision_config.model_type, cfg.vision_feature_layer, cfg.vision_feature_select_strategy,
            cfg.image_seq_length, processor.num_additional_image_tokens) == ("beit", -2, "default", 16, 1)
    tower = PanDermTower.from_pretrained(converted).tower
    assert all(torch.equal(p, dict(model.model.vision_tower.named_parameters())[k])
               for k, p in tower.named_parameters())
    pixels = processor.image_processor(Image.open(world / "images" / "0.png"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pixels, vision_feature_layer=-2,
                                         vision_feature_select_strategy="default").pooler_output[0]
        expected = model.model.multi_modal_projector(tower(pixel_values=pixels, output_hidden_states=True)
                                                     .hidden_states[-2][0, 1:])
    assert torch.allclose(feats, expected, atol=1e-6)

    out = tmp_path / "run"
    recipe = load_recipe(RECIPES / "stage1_projector_panderm.yaml", [
        f"model.build.vision={converted}", f"model.build.llm={llm}", f"data.qa_dir={world / 'qa'}",
        f"data.image_root={world / 'images'}", "data.families=all", "data.max_length=128", f"train.output_dir={out}",
        "train.batch_size=4", "train.deepspeed=null", "train.workers=0", "train.report_to=[]",
        "train.logging_steps=1", "train.checkpoint_layers=0.0"])
    final = run_training(recipe)
    before, after = load_file(out / "init" / "model.safetensors"), load_file(final / "model.safetensors")
    parts = ("vision_tower", "multi_modal_projector", "language_model", "lm_head")
    changed = {p for k in before if not torch.equal(before[k], after[k]) for p in parts if p in k}
    assert changed == {"multi_modal_projector"}  # stage 1: the projector only, the BEiT tower kept
    assert len([e for e in json.loads((out / "train_log.json").read_text()) if "loss" in e]) == 2

    trained, trained_processor = load_model(final, device="cpu")
    stream = ChatSession(trained, trained_processor, Image.open(world / "images" / "1.png"), max_new_tokens=6)
    reply = stream.ask("What is the most likely diagnosis?")
    assert "".join(reply) == reply.reply.text and reply.reply.completion_tokens >= 1
    bench = f"qa:{world / 'qa'}:train:root={world / 'images'}"
    rows = {}
    for backend in ("llava", "hf"):
        run_eval(f"{backend}:{final}", bench, tmp_path / backend, limit=3, max_new_tokens=6, n_boot=10, plots=False)
        lines = (tmp_path / backend / "answers.jsonl").read_text().splitlines()
        rows[backend] = [(r["id"], r["blind"], r["reply"]) for r in map(json.loads, lines) if "id" in r]
    assert len(rows["llava"]) == 6 and rows["llava"] == rows["hf"]
    assert len({reply for _, _, reply in rows["llava"]}) > 1  # not one constant reply: the comparison can fail


def authors_preprocess(image: Image.Image, size: int = 224) -> torch.Tensor:
    """open_clip's eval transform written out: PIL bicubic resize of the short side (torchvision's int() of the long
    side), torchvision's centre crop offsets (round), ToTensor, OpenAI mean / std."""
    w, h = image.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    resized = image.resize(new, Image.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    x = torch.from_numpy(np.array(resized.crop((left, top, left + size, top + size)))).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def test_processor_follows_the_authors_recipe_on_real_photos(tmp_path):
    state = tiny_state()  # the same tiny tower at the real geometry: 224 px, patch 16 -> 14 x 14 + CLS
    state["visual.patch_embed.proj.weight"] = torch.randn(64, 3, 16, 16) * 0.05
    state["visual.pos_embed"] = torch.randn(1, 197, 64)
    tower, processor = convert_dermlip(str(checkpoint(tmp_path / "src", state)))
    assert (tower.config.image_size, tower.config.patch_size) == (224, 16)
    processor.save_pretrained(tmp_path / "proc")
    default, pil = (AutoImageProcessor.from_pretrained(tmp_path / "proc", **kw) for kw in ({}, {"backend": "pil"}))
    for proc in (default, pil):
        assert proc.size == {"shortest_edge": 224} and proc.crop_size == {"height": 224, "width": 224}
        assert tuple(proc.image_mean) == CLIP_MEAN and tuple(proc.image_std) == CLIP_STD and proc.resample == 3
    for path in PHOTOS:
        image = Image.open(path).convert("RGB")  # the PAD example is RGBA
        ref = authors_preprocess(image)
        assert torch.equal(pil(images=image, return_tensors="pt")["pixel_values"][0], ref)
        ours = default(images=image, return_tensors="pt")["pixel_values"][0]
        # torchvision's bicubic kernel (the default backend) differs from PIL's by at most 2 grey levels here
        assert ours.shape == ref.shape and (ours - ref).abs().max() < 2.5 / 255 / min(CLIP_STD)
        assert (ours - ref).abs().mean() < 1e-3


def test_recipes_are_the_b16_recipes_with_the_panderm_tower():
    for name in ("stage1_projector", "stage2_lora", "stage2_qlora"):
        b16, panderm = load_recipe(RECIPES / f"{name}.yaml"), load_recipe(RECIPES / f"{name}_panderm.yaml")
        flat = [{f"{s}.{k}": v for s, sec in r.items() for k, v in sec.items()} for r in (b16, panderm)]
        assert flat[0].keys() == flat[1].keys()
        differ = {k for k in flat[0] if flat[0][k] != flat[1][k]}
        assert differ == ({"model.build", "train.output_dir"} if name.startswith("stage1") else
                          {"model.path", "train.output_dir"})
        assert "panderm" in panderm["train"]["output_dir"]
        check_recipe(with_defaults(panderm))
    build = load_recipe(RECIPES / "stage1_projector_panderm.yaml")["model"]["build"]
    assert build["vision"] == HUB_ID and build["feature_layer"] == -2
    assert load_recipe(RECIPES / "stage2_lora_panderm.yaml")["model"]["path"] == "runs/qwen2.5-7b-panderm/stage1/model"


def test_hub_id_fetches_config_and_safetensors_only(tmp_path, monkeypatch):
    import huggingface_hub

    folder = checkpoint(tmp_path / "hub")
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"never read")
    fetched = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: [p.name for p in folder.iterdir()])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name: fetched.append(name) or str(folder / name))
    tower, _ = convert_dermlip(HUB_ID)
    assert fetched == ["open_clip_config.json", "open_clip_model.safetensors"] and isinstance(tower, PanDermTower)


def _convert(src: Path, out: Path, capsys, *extra) -> tuple[int, str]:
    """Exit code and stderr of `dermvqa convert-dermlip SRC --out OUT`."""
    code = app.run(["convert-dermlip", str(src), "--out", str(out), *extra])
    return code, capsys.readouterr().err


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    state = tiny_state()
    cases = [({"visual.trunk.weight": torch.ones(2), "logit_scale": torch.ones(())}, "neither an open_clip ViT"),
             ({k: v for k, v in state.items() if k != "visual.pos_embed"}, "missing weight visual.pos_embed"),
             ({k: v for k, v in state.items() if k != "visual.blocks.1.gamma_2"},
              "missing weight visual.blocks.1.gamma_2"),
             ({**state, "visual.fc_norm.weight": torch.ones(64)}, "no place for: ['visual.fc_norm.weight']"),
             ({**state, "visual.head.weight": torch.ones(16, 64), "visual.head.bias": torch.ones(16)},
              "embed_dim 32 in the config, but visual.head.weight projects to 16")]
    for i, (bad, message) in enumerate(cases):
        code, err = _convert(checkpoint(tmp_path / str(i), bad), tmp_path / "out", capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(PanDermError, match=f"{tmp_path}: no {HEAD_FILE}"):
        PanDermTower.from_pretrained(tmp_path)


def test_pickle_weights_need_the_opt_in_and_then_convert_alike(tmp_path, capsys, converted):
    src, out = checkpoint(tmp_path / "src", weights="open_clip_pytorch_model.bin"), tmp_path / "out"
    code, err = _convert(src, out, capsys)
    assert code == 2 and err.count("\n") == 1 and "pickle weights can run code" in err and not out.exists()
    assert _convert(src, out, capsys, "--allow-pickle")[0] == 0
    for name in ("model.safetensors", HEAD_FILE):
        ours, safe = load_file(out / name), load_file(converted / name)
        assert ours.keys() == safe.keys() and all(torch.equal(ours[k], safe[k]) for k in ours)


def test_golden_check_script_runs_on_a_local_folder(tmp_path, capsys):
    """Random weights cannot match the published probabilities (exit 1), but the script must run end to end: our
    tower, the checkpoint's own text tower (a tiny local BERT here, loaded strictly) and the 6 PAD classes."""
    from open_clip.model import _build_text_tower
    from transformers import BertConfig, BertTokenizer

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of"]))
    BertTokenizer(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    BertConfig(vocab_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=32).save_pretrained(bert)
    text_cfg = {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16}
    text = _build_text_tower(32, {**text_cfg, "hf_model_pretrained": False})
    src = checkpoint(tmp_path / "src", {**load_file(GOLDEN / "tiny_tower.safetensors"),
                                        **{f"text.{k}": v.contiguous() for k, v in text.state_dict().items()}})
    cfg = json.loads((src / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"] = text_cfg
    (src / "open_clip_config.json").write_text(json.dumps(cfg))
    from dermvqa.bench import check_panderm_golden

    assert check_panderm_golden.main([str(src)]) == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:7]]
    assert rows[1][:3] == ["basal", "cell", "carcinoma"]
    assert sum(float(r[-1]) for r in rows) == pytest.approx(1, abs=1e-3)  # the "ours" column: a softmax
