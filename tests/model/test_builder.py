"""LLaVA builder on tiny random models: image-token reuse/add paths, chat template, token expansion, errors."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (AutoProcessor, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel,
                          LlavaForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM, SiglipImageProcessor,
                          SiglipVisionConfig, SiglipVisionModel)
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from dermvqa.model.builder import BuildError, build_llava, save_build, wrap_chat_template
from dermvqa.model.tiny import train_bpe

# A Llama-3-like template that, like many real ones, only understands string content.
LLAMA_LIKE = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
              "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
              "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
# A Qwen-like ChatML template with a default system turn.
QWEN_LIKE = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
             "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
BASE_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<|im_start|>", "<|im_end|>"]
TEXTS = ["what lesion is this", "a scaly red plaque on the elbow", "basal cell carcinoma", "psoriasis"] * 10


def make_llm(folder: Path, extra_specials=(), spare_rows: int = 0, template=LLAMA_LIKE, pad=True, tie=False):
    tok = train_bpe(TEXTS, 320, BASE_SPECIALS + ["<|pad|>"] * pad)
    tokenizer = TokenizersBackend(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|pad|>" if pad else None, extra_special_tokens=list(extra_specials))
    tokenizer.chat_template = template
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer) + spare_rows, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tie,
                         eos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_clip(folder: Path, image_size=224, patch=16, processor_size=None):
    torch.manual_seed(1)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=image_size, patch_size=patch, projection_dim=16)
    CLIPVisionModel(config).save_pretrained(folder)
    side = processor_size or image_size
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"))


def _image():
    return Image.new("RGB", (300, 260), (200, 120, 110))


def _user(q="what lesion is this"):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]


def _check_end_to_end(model, processor, info):
    prompt = processor.apply_chat_template(_user(), add_generation_prompt=True, tokenize=False)
    assert processor.image_token + "\nwhat lesion is this" in prompt and "'type'" not in prompt
    batch = processor(images=_image(), text=prompt, return_tensors="pt")
    n_image = (batch["input_ids"] == model.config.image_token_id).sum().item()
    assert n_image == info["image_seq_length"] == model.config.image_seq_length
    labels = batch["input_ids"].clone()
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    return batch, out


def test_reuses_reserved_token_without_resize(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm", extra_specials=["<|reserved_special_token_0|>", "<|reserved_special_token_1|>"])
    vocab_before = json.loads((llm / "config.json").read_text())["vocab_size"]
    model, processor, info = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    assert info["image_token_how"] == "reused" and info["image_token"] == "<|reserved_special_token_0|>"
    assert model.config.text_config.vocab_size == vocab_before
    assert model.get_input_embeddings().weight.shape[0] == vocab_before
    assert info["image_seq_length"] == 196  # ViT-B/16 geometry at 224 px, layer -2, CLS dropped
    assert processor.num_additional_image_tokens == 1 and processor.vision_feature_select_strategy == "default"
    _check_end_to_end(model, processor, info)


def test_adds_token_and_resizes_with_mean_rows(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm")
    model, processor, info = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    assert info["image_token_how"] == "added" and info["image_token"] == "<image>"
    emb = model.get_input_embeddings().weight
    token_id = model.config.image_token_id
    assert token_id == emb.shape[0] - 1 == model.config.text_config.vocab_size - 1
    assert torch.allclose(emb[token_id], emb[:token_id].mean(0), atol=1e-6)
    assert torch.allclose(model.lm_head.weight[token_id], model.lm_head.weight[:token_id].mean(0), atol=1e-6)
    _check_end_to_end(model, processor, info)


def test_spare_embedding_row_used_without_resize(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm", spare_rows=8, tie=True)
    rows = json.loads((llm / "config.json").read_text())["vocab_size"]
    model, processor, info = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    emb = model.get_input_embeddings().weight
    token_id = model.config.image_token_id
    assert info["image_token_how"] == "added" and emb.shape[0] == rows and token_id < rows - 1
    assert torch.allclose(emb[token_id], emb[:token_id].mean(0), atol=1e-6)
    assert model.lm_head.weight is emb  # tying survives
    _check_end_to_end(model, processor, info)


def test_existing_image_token_and_no_pad(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm", extra_specials=["<image>", "<|reserved_special_token_0|>"], pad=False,
                   template=QWEN_LIKE)
    model, processor, info = build_llava(str(clip_dir), str(llm), projector="linear", dtype=torch.float32)
    assert info["image_token_how"] == "existing"
    assert info["pad_token"] == "reserved" and processor.tokenizer.pad_token == "<|reserved_special_token_0|>"
    assert model.config.projector_hidden_act == "linear"
    prompt = processor.apply_chat_template(_user() + [{"role": "assistant", "content": "psoriasis"}], tokenize=False)
    assert prompt.startswith("<|im_start|>system\nYou are helpful.") and "<|im_start|>assistant\npsoriasis" in prompt
    _check_end_to_end(model, processor, info)


def test_saved_build_loads_with_plain_transformers(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm", extra_specials=["<|reserved_special_token_0|>"])
    model, processor, info = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    batch, out = _check_end_to_end(model, processor, info)
    saved = save_build(model, processor, info, tmp_path / "built")
    assert (saved / "model.safetensors").is_file() and (saved / "BUILD_INFO.json").is_file()
    again = LlavaForConditionalGeneration.from_pretrained(saved).eval()
    proc = AutoProcessor.from_pretrained(saved)
    assert proc.image_token == info["image_token"] and proc.patch_size == 16
    prompt = proc.apply_chat_template(_user(), add_generation_prompt=True, tokenize=False)
    batch2 = proc(images=_image(), text=prompt, return_tensors="pt")
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    with torch.no_grad():
        assert torch.allclose(again(**batch2).logits, model(**batch).logits, atol=1e-5)
    with pytest.raises(FileExistsError):
        save_build(model, processor, info, saved)


def test_siglip_tower_keeps_every_patch(tmp_path):
    folder = tmp_path / "siglip"
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=64, patch_size=16)).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    llm = make_llm(tmp_path / "llm")
    model, processor, info = build_llava(str(folder), str(llm), dtype=torch.float32)
    assert info["strategy"] == "full" and info["image_seq_length"] == 16
    _check_end_to_end(model, processor, info)


def test_open_clip_folder_as_vision(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 224, "layers": 3, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 4, "layers": 1}}
    clip = open_clip.model.CLIP(**cfg)
    folder = tmp_path / "dermlip"
    folder.mkdir()
    save_file({k: v.contiguous().clone() for k, v in clip.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    model, processor, info = build_llava(str(folder), str(make_llm(tmp_path / "llm")), dtype=torch.float32)
    assert model.config.vision_config.hidden_act == "quick_gelu" and info["image_seq_length"] == 196
    _check_end_to_end(model, processor, info)


def test_mismatches_are_clear_errors(tmp_path, clip_dir):
    llm = make_llm(tmp_path / "llm")
    with pytest.raises(BuildError, match="not a CLIP/SigLIP vision model .is this the LLM"):
        build_llava(str(llm), str(llm))
    with pytest.raises(BuildError, match="swapped --vision/--llm"):
        build_llava(str(clip_dir), str(clip_dir))
    with pytest.raises(BuildError, match="config and processor disagree"):
        build_llava(str(make_clip(tmp_path / "clip_bad", processor_size=192)), str(llm))
    with pytest.raises(BuildError, match="projector"):
        build_llava(str(clip_dir), str(llm), projector="qformer")
    with pytest.raises(BuildError, match="feature_layer"):
        build_llava(str(clip_dir), str(llm), feature_layer=-9)
    no_template = make_llm(tmp_path / "llm_nt", template=None)
    with pytest.raises(BuildError, match="no chat template"):
        build_llava(str(clip_dir), str(no_template))


def test_template_prelude_keeps_string_turns():
    from jinja2 import Environment

    template = Environment().from_string(wrap_chat_template(LLAMA_LIKE, "<image>"))
    text = template.render(messages=[{"role": "system", "content": "be brief"}] + _user("q?"),
                           bos_token="<s>", add_generation_prompt=True)
    assert text == ("<s><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\n<image>\nq?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_cli_convert_then_build(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from dermvqa.cli import app

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 4, "layers": 1}}
    src = tmp_path / "dermlip"
    src.mkdir()
    save_file({k: v.contiguous().clone() for k, v in open_clip.model.CLIP(**cfg).state_dict().items()},
              src / "open_clip_model.safetensors")
    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    runner = CliRunner()
    res = runner.invoke(app, ["convert-dermlip", str(src), "--out", str(tmp_path / "tower")])
    assert res.exit_code == 0, res.output
    assert "act gelu" in res.output and (tmp_path / "tower" / "preprocessor_config.json").is_file()
    llm = make_llm(tmp_path / "llm")
    res = runner.invoke(app, ["build", "--vision", str(tmp_path / "tower"), "--llm", str(llm), "--out",
                              str(tmp_path / "llava"), "--dtype", "float32", "--projector", "linear"])
    assert res.exit_code == 0, res.output
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava")
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    info = json.loads((tmp_path / "llava" / "BUILD_INFO.json").read_text())
    assert info["image_seq_length"] == 16 == model.config.image_seq_length
    _check_end_to_end(model, processor, info)
    again = ["build", "--vision", str(tmp_path / "tower"), "--llm", str(llm), "--dtype", "float32", "--projector",
             "linear"]
    assert runner.invoke(app, again + ["--out", str(tmp_path / "llava2")]).exit_code == 0
    assert runner.invoke(app, again + ["--out", str(tmp_path / "llava3"), "--seed", "1"]).exit_code == 0
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("llava", "llava2", "llava3")]
    assert weights[0] == weights[1] != weights[2]  # same seed: byte-identical; another seed: another projector
