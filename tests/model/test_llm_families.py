"""Llama-3, Mistral, Phi-3 and Qwen2 shaped LLMs, each with a chat template in its family's format, join a CLIP tower.

For each: the image token is reused or added as the tokenizer allows, the training ids of a record
start with exactly the ids inference feeds the model, the labels are the answer plus the family's
end-of-turn tokens, packed rows give the padded batch's loss, and after a few steps on that one record greedy generation reproduces it
(so training and inference agree on the prompt, template and stop tokens).
"""
import pytest
import torch
from PIL import Image
from tokenizers import processors
from transformers import (AutoProcessor, LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration,
                          MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from dermvqa.data.collator import PaddingCollator
from dermvqa.data.conversation import IGNORE_INDEX, record_messages, tokenize_chat
from dermvqa.infer.generate import answer_batch, encode_prompts, prompt_text, user_turn
from dermvqa.model.builder import build_llava, save_build
from dermvqa.model.tiny import train_bpe
from dermvqa.train.packing import PackingCollator
from dermvqa.train.step import label_only_loss
from tests.model.test_builder import make_clip

# Templates written in each family's published turn format (roles, headers, end tokens).
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]"
           "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
PHI3 = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}")
QWEN2 = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
         "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# family: (config class, model class, template, special tokens, bos, eos, pad, image token how, label tail)
FAMILIES = {
    "llama3": (LlamaConfig, LlamaForCausalLM, LLAMA3,
               ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"],
               "<|begin_of_text|>", "<|eot_id|>", None, "reused", "<|eot_id|>"),
    "mistral": (MistralConfig, MistralForCausalLM, MISTRAL, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
                "<s>", "</s>", None, "added", "</s>"),
    "phi3": (Phi3Config, Phi3ForCausalLM, PHI3,
             ["<unk>", "<s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>",
              "<|placeholder1|>", "<|placeholder2|>"],
             "<s>", "<|endoftext|>", "<|endoftext|>", "reused", "<|end|>\n<|endoftext|>"),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, QWEN2,
              ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"],
              None, "<|im_end|>", "<|endoftext|>", "reused", "<|im_end|>\n"),
}
# what ends an answer that the conversation continues after (Phi-3 closes only the last one with eos)
MID_TAIL = {"llama3": "<|eot_id|>", "mistral": "</s>", "phi3": "<|end|>\n", "qwen2": "<|im_end|>\n"}
TEXTS = ["what is the most likely diagnosis", "a scaly red plaque on the elbow", "psoriasis", "melanoma"] * 10
RECORD = {"question": "What is the most likely diagnosis?", "answer": "psoriasis"}
OTHER = {"question": "Is this melanoma?", "answer": "a scaly red plaque on the elbow, not melanoma"}


def make_family_llm(folder, family):
    config_cls, model_cls, template, specials, bos, eos, pad, *_ = FAMILIES[family]
    tok = train_bpe(TEXTS, 300, specials)
    if family in ("llama3", "mistral"):  # like the released tokenizers: plain encoding prepends bos
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    tokenizer = TokenizersBackend(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    tokenizer.chat_template = template
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = model_cls(config)
    if family == "phi3":  # Phi-3 stops on <|end|> as well as on eos
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), image_size=32, patch=8)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_trains_and_answers(tmp_path, clip_dir, family):
    *_, how, tail = FAMILIES[family]
    llm = make_family_llm(tmp_path / "llm", family)
    model, processor, info = build_llava(str(clip_dir), str(llm), dtype=torch.float32)
    assert info["image_token_how"] == how and info["image_seq_length"] == 16
    folder = save_build(model, processor, info, tmp_path / "llava")
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer

    ids, labels = tokenize_chat(record_messages(RECORD), tokenizer, processor.chat_template,
                                processor.image_token, info["image_seq_length"], max_length=128)
    n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in labels[:n_prompt]) and labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(labels[n_prompt:]) == RECORD["answer"] + tail
    image = Image.new("RGB", (40, 36), (190, 110, 100))
    prompt = prompt_text(processor, [user_turn(RECORD["question"])])
    infer_ids = encode_prompts(processor, [image], [prompt], return_tensors="pt")["input_ids"][0].tolist()
    assert infer_ids == ids[:n_prompt]  # training prompt ids are exactly what inference feeds
    if tokenizer.bos_token_id is not None:  # once, from the template, though the tokenizer adds bos by itself
        assert infer_ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(model.config.image_token_id) == info["image_seq_length"]

    pixels = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    other = tokenize_chat(record_messages(OTHER), tokenizer, processor.chat_template, processor.image_token,
                          info["image_seq_length"], max_length=128)
    examples = [{"input_ids": i, "labels": lab, "pixel_values": pixels[0]} for i, lab in ((ids, labels), other)]
    model.eval()  # packed rows (block-diagonal attention from restarting positions) = padded batch, per family
    ref = model(**PaddingCollator(tokenizer.pad_token_id)(examples)).loss
    assert abs(label_only_loss(model, PackingCollator(256)(examples))[0].item() - ref.item()) < 1e-5

    batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "pixel_values": pixels}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(200):  # memorise the one record
        loss = model(**batch).loss
        if loss.item() < 0.01:
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.01
    processor.tokenizer.padding_side = "left"
    assert answer_batch(model.eval(), processor, [image], [RECORD["question"]], max_new_tokens=8) == [RECORD["answer"]]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_multi_turn_labels_and_prompts(tmp_path, clip_dir, family):
    *_, tail = FAMILIES[family]
    model, processor, info = build_llava(str(clip_dir), str(make_family_llm(tmp_path / "llm", family)),
                                         dtype=torch.float32)
    msgs = record_messages(RECORD) + [{"role": "user", "content": "And the colour?"},
                                      {"role": "assistant", "content": "red"}]
    ids, labels = tokenize_chat(msgs, processor.tokenizer, processor.chat_template, processor.image_token,
                                info["image_seq_length"], max_length=256)
    labelled = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert labelled == RECORD["answer"] + MID_TAIL[family] + "red" + tail
    # the second answer starts right after exactly the ids inference feeds for the second question
    image = Image.new("RGB", (40, 36), (190, 110, 100))
    second = encode_prompts(processor, [image], [prompt_text(processor, msgs[:3])])["input_ids"][0]
    second = list(second)
    assert ids[:len(second)] == second and labels[len(second)] != IGNORE_INDEX
    assert labels[len(second) - 1] == IGNORE_INDEX
