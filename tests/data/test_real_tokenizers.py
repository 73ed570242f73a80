"""The real Qwen2.5, Mistral and Phi-3 tokenizers and chat templates (../shared/data/tokenizers, see SOURCE.md):
training ids, the inference prompt and a chat's history agree token for token.

Each family gets a tiny random LLM carrying the real tokenizer, joined to a tiny CLIP tower by `build_llava`.
Mistral and Phi-3 tokenize an answer differently alone (`▁pl`, as training does) and inside the whole
rendered history (`pl`), so a chat that re-tokenized its history would feed ids training never made.
"""
import pytest
import torch
from PIL import Image
from transformers import (AutoTokenizer, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

from dermvqa.data.conversation import IGNORE_INDEX, record_messages, tokenize_chat, user_turn
from dermvqa.infer.chat import ChatSession, prompt_ids
from dermvqa.infer.generate import encode_prompts, prompt_text
from dermvqa.model.builder import build_llava
from dermvqa.model.processor import tokens_per_image
from tests.conftest import SHARED_DATA
from tests.model.test_builder import make_clip

TOKENIZERS = SHARED_DATA / "tokenizers"
pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason="needs ../shared/data/tokenizers")

# folder: (config class, model class, tokens closing the last answer, tokens closing an answer the chat continues)
FAMILIES = {
    "qwen2.5": (Qwen2Config, Qwen2ForCausalLM, ["<|im_end|>", "Ċ"], ["<|im_end|>", "Ċ"]),
    "mistral-v0.2": (MistralConfig, MistralForCausalLM, ["</s>"], ["</s>"]),
    "phi-3": (Phi3Config, Phi3ForCausalLM, ["<|end|>", "<|endoftext|>"], ["<|end|>"]),
}
RECORD = {"question": "What is the most likely diagnosis?", "answer": "plaque psoriasis"}
FOLLOW_UP = {"question": "What colour is it?", "answer": "salmon pink with silvery scale"}
IMAGE = Image.new("RGB", (40, 36), (190, 110, 100))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), image_size=32, patch=8)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, clip_dir, tmp_path_factory):
    """(name, LLaVA model, processor) built from a tiny random LLM with the family's real tokenizer."""
    config_cls, model_cls, *_ = FAMILIES[request.param]
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / request.param)
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp(request.param)
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model, processor, _ = build_llava(str(clip_dir), str(folder), dtype=torch.float32)
    return request.param, model, processor


def _training_ids(processor, messages):
    return tokenize_chat(messages, processor.tokenizer, processor.chat_template, processor.image_token,
                         tokens_per_image(processor), max_length=4096)


def _tokens(processor, ids):
    return processor.tokenizer.convert_ids_to_tokens(ids)


def _answer_tokens(processor, text):
    return _tokens(processor, processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_labels_are_exactly_the_answer_and_the_end_of_turn(family):
    name, _, processor = family
    ids, labels = _training_ids(processor, record_messages(RECORD))
    start = labels.index(next(lab for lab in labels if lab != IGNORE_INDEX))
    assert set(labels[:start]) == {IGNORE_INDEX} and labels[start:] == ids[start:]
    assert _tokens(processor, labels[start:]) == _answer_tokens(processor, RECORD["answer"]) + FAMILIES[name][2]


def test_inference_prompt_ids_are_the_training_prompt_ids(family):
    _, _, processor = family
    ids, labels = _training_ids(processor, record_messages(RECORD))
    n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    question = [user_turn(RECORD["question"])]
    answering = encode_prompts(processor, [IMAGE], [prompt_text(processor, question)])["input_ids"][0]
    assert list(answering) == ids[:n_prompt]  # answer_batch / eval
    assert prompt_ids(processor, question) == ids[:n_prompt]  # chat's first turn


def test_second_chat_turn_feeds_the_history_in_the_training_ids(family, monkeypatch):
    name, model, processor = family
    _, _, last_tail, continued_tail = FAMILIES[name]
    messages = record_messages(RECORD) + record_messages(FOLLOW_UP, with_image=False)
    ids, labels = _training_ids(processor, messages)
    labelled = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    second = next(i for i, j in zip(labelled[1:], labelled) if i != j + 1)  # where the second answer starts
    assert _tokens(processor, [ids[i] for i in labelled]) == (
        _answer_tokens(processor, RECORD["answer"]) + continued_tail
        + _answer_tokens(processor, FOLLOW_UP["answer"]) + last_tail)

    fed = []
    generate = model.generate

    def spy(**kwargs):
        fed.append(kwargs["input_ids"][0].tolist())
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    session = ChatSession(model, processor, IMAGE, max_new_tokens=2)
    session.turns = [(RECORD["question"], RECORD["answer"])]
    list(session.ask(FOLLOW_UP["question"]))
    assert fed == [ids[:second]]
