"""Greedy means argmax: a tiny LLM carrying Qwen2.5's real tokenizer and sampling generation config.

Qwen2.5-7B-Instruct's generation_config samples (temperature 0.7, top_p 0.8, top_k 20) with a
repetition penalty of 1.05; copied into a LLaVA folder it changed answers that must repeat the
question's words. Our decoding, the built folder and the exported folder must all be plain argmax.
"""
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, GenerationConfig, LlavaForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM

from dermvqa.data.conversation import user_turn
from dermvqa.infer.generate import answer_batch, encode_prompts, prompt_text
from dermvqa.model.builder import build_llava, save_build
from dermvqa.train.export import export
from tests.conftest import SHARED_DATA
from tests.model.test_builder import make_clip

QWEN = SHARED_DATA / "tokenizers" / "qwen2.5"
QUESTIONS = ["Is this psoriasis?", "Is this melanoma? Answer yes or no.", "What is the most likely diagnosis?",
             "Which is right: A. eczema B. psoriasis C. tinea D. acne"]
NEW = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_greedy")
    tokenizer = AutoTokenizer.from_pretrained(QWEN)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151680, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         eos_token_id=151645, bos_token_id=151643, tie_word_embeddings=False)
    llm = Qwen2ForCausalLM(config)
    llm.generation_config = GenerationConfig.from_pretrained(QWEN)
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    model, processor, info = build_llava(str(make_clip(root / "clip", image_size=32, patch=16)), str(root / "llm"),
                                         dtype=torch.float32)
    save_build(model, processor, info, root / "built")
    processor.tokenizer.padding_side = "left"
    return root, model.eval(), processor


def _images():
    return [Image.new("RGB", (40, 40), c) for c in [(200, 80, 80), (90, 60, 40), (240, 220, 200), (30, 140, 60)]]


@torch.no_grad()
def _argmax_loop(model, processor, image, question, eos):
    """Token by token, no cache, the highest logit each time: greedy by definition."""
    enc = encode_prompts(processor, [image], [prompt_text(processor, [user_turn(question)])], return_tensors="pt")
    ids, new = enc["input_ids"], []
    for _ in range(NEW):
        logits = model(input_ids=ids, pixel_values=enc["pixel_values"], attention_mask=torch.ones_like(ids)).logits
        nxt = int(logits[0, -1].argmax())
        if nxt in eos:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_built_folder_is_greedy_with_qwen_stop_ids(built):
    root, model, _ = built
    saved = GenerationConfig.from_pretrained(root / "built")
    for config in (model.generation_config, saved):
        assert config.do_sample is False and config.num_beams == 1 and config.repetition_penalty == 1.0
        assert config.temperature is None and config.top_p is None and config.top_k is None
        assert config.eos_token_id == [151645, 151643] and config.pad_token_id is not None


def test_answers_are_exactly_argmax_and_export_reproduces_them(built, tmp_path):
    root, model, processor = built
    images = _images()
    # questions that name what the model would say, as a yes/no names the diagnosis it asks about
    questions = [f"Is this {a}?" for a in answer_batch(model, processor, images, QUESTIONS, max_new_tokens=NEW)]
    ours = answer_batch(model, processor, images, questions, max_new_tokens=NEW)
    manual = [_argmax_loop(model, processor, im, q, {151645, 151643}) for im, q in zip(images, questions)]
    assert ours == manual and any(ours)
    batch = encode_prompts(processor, images, [prompt_text(processor, [user_turn(q)]) for q in questions],
                           return_tensors="pt", padding=True)
    model.generation_config = GenerationConfig.from_pretrained(QWEN)  # what the builder used to copy
    try:
        assert answer_batch(model, processor, images, questions, max_new_tokens=NEW) == ours  # ours overrides it
        penalised = model.generate(**batch, max_new_tokens=NEW, do_sample=False)  # its 1.05 penalty bites
        texts = processor.batch_decode(penalised[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        assert [t.strip() for t in texts] != ours
    finally:
        model.generation_config = GenerationConfig.from_pretrained(root / "built")
    out = export(root / "built", tmp_path / "export")
    plain = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert plain.generation_config.do_sample is False and plain.generation_config.repetition_penalty == 1.0
    generated = plain.generate(**batch, max_new_tokens=NEW)  # nothing but the folder's own config
    texts = processor.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [t.strip() for t in texts] == ours
