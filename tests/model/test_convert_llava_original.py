"""convert_llava_original on a tiny checkpoint in the original LLaVA layout (tiny Mistral + tiny CLIP tower, the
real Mistral v0.2 tokenizer): the converted transformers model's logits equal the original LLaVA forward
computed by hand (tower layer -2 without CLS -> mm_projector -> spliced into the LLM's input embeddings)."""
import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (AutoProcessor, AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel,
                          LlavaForConditionalGeneration, MistralConfig, MistralForCausalLM)

from dermvqa.model.convert_llava_original import convert
from tests.conftest import SHARED_DATA

MISTRAL_TOKENIZER = SHARED_DATA / "tokenizers" / "mistral-v0.2"
QUESTION = "What is the most likely diagnosis?"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(folder in the original layout, its LLM, tower, projector, tower's image processor)."""
    root = tmp_path_factory.mktemp("llava_med")
    torch.manual_seed(0)
    tower_dir, src = root / "clip", root / "original"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8)
    tower = CLIPVisionModel(vision).eval()
    clip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tower.save_pretrained(tower_dir)
    clip.save_pretrained(tower_dir)
    text = MistralConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    llm = MistralForCausalLM(text).eval()
    projector = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)).eval()
    with torch.no_grad():
        for module in (tower, llm, projector):
            for p in module.parameters():
                p.normal_(0, 0.2)
    state = {**llm.state_dict(), **{f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()},
             **{f"model.vision_tower.vision_tower.{k}": v for k, v in tower.state_dict().items()}}
    src.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, src / "model.safetensors")
    config = {**text.to_dict(), "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral",
              "mm_vision_tower": str(tower_dir), "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
              "mm_vision_select_feature": "patch", "mm_hidden_size": 32, "image_aspect_ratio": "pad",
              "mm_use_im_start_end": False, "mm_use_im_patch_token": False}
    (src / "config.json").write_text(json.dumps(config))
    for f in MISTRAL_TOKENIZER.iterdir():
        shutil.copy(f, src / f.name)
    return src, llm, tower, projector, clip


def padded_square(image: Image.Image, mean) -> Image.Image:
    """LLaVA's expand2square: the image centred on a square of the mean colour."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(255 * m) for m in mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


@torch.no_grad()
def original_logits(original_parts, image: Image.Image, prompt: str) -> torch.Tensor:
    """LLaVA's own forward: prompt split at <image> and tokenized piecewise (tokenizer_image_token), the tower's
    layer -2 patch features projected and spliced in place of the placeholder."""
    _, llm, tower, projector, clip = original_parts
    tok = AutoTokenizer.from_pretrained(MISTRAL_TOKENIZER)
    before, after = prompt.removeprefix(tok.bos_token).split("<image>")  # the original's prompt has no literal bos
    ids_before = tok(before).input_ids  # bos + text
    ids_after = tok(after).input_ids[1:]  # without its bos
    pixels = clip(images=padded_square(image, clip.image_mean), return_tensors="pt")["pixel_values"]
    features = projector(tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:])
    embed = llm.get_input_embeddings()
    embeds = torch.cat([embed(torch.tensor([ids_before])), features, embed(torch.tensor([ids_after]))], dim=1)
    return llm(inputs_embeds=embeds).logits[0]


def test_converted_logits_equal_the_original_forward(original, tmp_path, capsys):
    from dermvqa.cli import app

    out = tmp_path / "converted"  # through the command a user runs
    assert app.run(["convert-llava-original", str(original[0]), "--out", str(out)]) == 0
    assert f"--model hf:{out}" in capsys.readouterr().out
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == f"<s>[INST] <image>\n{QUESTION} [/INST]"
    image = Image.new("RGB", (40, 24), (200, 60, 30))  # not square: the mean-colour pad matters
    inputs = processor(images=[image], text=[prompt], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        converted = model(**inputs).logits[0, :, :32000]
    expected = original_logits(original, image, prompt)
    assert converted.shape == expected.shape
    torch.testing.assert_close(converted, expected, atol=1e-4, rtol=1e-4)
    assert model.generation_config.do_sample is False
    sidecar = json.loads((out / "converted_from.json").read_text())
    assert sidecar["conversation"] == "mistral_instruct" and "model.safetensors" in sidecar["weights"]


def test_reply_template_and_refusals(original, tmp_path):
    src = original[0]
    out = convert(src, tmp_path / "converted")
    processor = AutoProcessor.from_pretrained(out)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "psoriasis"}]}]
    assert processor.apply_chat_template(chat, tokenize=False) == "<s>[INST] <image>\nq? [/INST] psoriasis</s>"
    with pytest.raises(FileExistsError):
        convert(src, out)
    pickled = tmp_path / "pickled"
    shutil.copytree(src, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="--allow-pickle"):
        convert(pickled, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert (convert(pickled, tmp_path / "allowed", allow_pickle=True) / "model.safetensors").exists()
