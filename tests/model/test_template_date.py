"""A Llama-3.2-style template prints "Today Date: <today>"; a built model's template pins it (builder.TEMPLATE_DATE),
so training ids and chat ids made on different days are the same."""
from datetime import datetime

import pytest
import torch
from transformers import AutoTokenizer

from dermvqa.data.conversation import IGNORE_INDEX, record_messages, tokenize_chat, user_turn
from dermvqa.infer.chat import prompt_ids
from dermvqa.infer.generate import prompt_text
from dermvqa.model.builder import TEMPLATE_DATE, build_llava
from dermvqa.model.processor import tokens_per_image
from tests.model.test_builder import make_clip
from tests.model.test_llm_families import RECORD, make_family_llm

# The date logic of Llama-3.2's template, with the family's turn format.
LLAMA32_DATED = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), image_size=32, patch=8)


def test_built_template_pins_the_date_in_training_and_chat(tmp_path, clip_dir):
    llm = make_family_llm(tmp_path / "llm", "llama3")
    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.chat_template = LLAMA32_DATED
    tokenizer.save_pretrained(llm)
    today = datetime.now().strftime("%d %b %Y")
    assert today != TEMPLATE_DATE
    question = [user_turn(RECORD["question"], with_image=False)]
    assert f"Today Date: {today}" in tokenizer.apply_chat_template(question, tokenize=False)  # unpinned: today

    _, processor, _ = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    prompt = prompt_text(processor, [user_turn(RECORD["question"])])
    assert f"Today Date: {TEMPLATE_DATE}<|eot_id|>" in prompt and today not in prompt
    ids, labels = tokenize_chat(record_messages(RECORD), processor.tokenizer, processor.chat_template,
                                processor.image_token, tokens_per_image(processor), max_length=256)
    n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert TEMPLATE_DATE in processor.tokenizer.decode(ids[:n_prompt])
    assert prompt_ids(processor, [user_turn(RECORD["question"])]) == ids[:n_prompt]
    # a caller may still choose a date
    assert "Today Date: 01 Jan 2030" in processor.apply_chat_template(question, tokenize=False,
                                                                      date_string="01 Jan 2030")
