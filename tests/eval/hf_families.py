"""Tiny random-weight image-text-to-text models of each family the hf: adapter is tested on, built from configs."""
import json
from pathlib import Path

import torch
import transformers as tf
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from dermvqa.model.tiny import train_bpe
from tests.conftest import SHARED_DATA, TINY_TEXTS

QWEN_TOKENIZER = SHARED_DATA / "tokenizers" / "qwen2.5"
MISTRAL_TOKENIZER = SHARED_DATA / "tokenizers" / "mistral-v0.2"
QUESTIONS = ["What is the most likely diagnosis?", "Is this psoriasis?", "Which colour is the lesion?",
             "Describe the border.", "Is it scaly?", "Where is the lesion?", "Is this melanoma?", "How big is it?"]
LEAKY = {"do_sample": True, "temperature": 0.7, "repetition_penalty": 1.3, "top_k": 50}

QWEN_VL_TEMPLATE = (  # Qwen2-VL-Instruct's template (Qwen2.5-VL ships the same one)
    "{% for message in messages %}{% if loop.first and message['role'] "
    "!= 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>"
    "{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ONEVISION_TEMPLATE = (  # llava-hf/llava-onevision-qwen2-*-hf: note the space after the role
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA3_TEMPLATE = (  # google/gemma-3-*-it without the system-prompt branch
    "{{ bos_token }}{%- for message in messages -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}{%- else -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}")
IDEFICS3_TEMPLATE = (  # HuggingFaceM4/Idefics3-8B-Llama3
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type']"
    " == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == "
    "'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
LLAVA_NEXT_TEMPLATE = (  # llava-hf/llava-v1.6-mistral-7b-hf: no generation prompt, the reply follows " [/INST]"
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% endif %}{% endfor %}")
SMOLVLM_TEMPLATE = (  # HuggingFaceTB/SmolVLM-*-Instruct: Idefics3's, opened by <|im_start|> once
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
PALIGEMMA_TEMPLATE = (  # PaliGemma's format: the processor expands <image>, adds "<bos>" after it and "\n" after the
    # prompt; the answer follows, then eos
    "{% for message in messages %}{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}")


def tiny_text(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=512, **extra)


def tiny_vision(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                patch_size=8, **extra)


def trained_tokenizer(specials: list[str], **roles) -> TokenizersBackend:
    return TokenizersBackend(tokenizer_object=train_bpe(TINY_TEXTS + QUESTIONS, 300, specials), **roles)


def qwen_vl(processor_cls, config_cls, model_cls, vision: dict):
    """A Qwen2-VL-style model (Qwen2-VL, Qwen2.5-VL) with the real Qwen2.5 tokenizer and 4 px patches."""
    tok = tf.AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
    grid = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = processor_cls(image_processor=tf.Qwen2VLImageProcessor(min_pixels=256, max_pixels=256, **grid),
                              video_processor=tf.Qwen2VLVideoProcessor(**grid), tokenizer=tok,
                              chat_template=QWEN_VL_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    config = config_cls(
        text_config=tiny_text(len(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                              eos_token_id=ids("<|im_end|>"), pad_token_id=tok.pad_token_id),
        vision_config={**vision, **grid, "spatial_merge_size": 2},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"))
    return model_cls(config), processor


def qwen2_5_vl():
    return qwen_vl(tf.Qwen2_5_VLProcessor, tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration,
                   {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                    "window_size": 8, "fullatt_block_indexes": [0]})


def llava_onevision():
    tok = tf.AutoTokenizer.from_pretrained(QWEN_TOKENIZER, extra_special_tokens={"image_token": "<image>",
                                                                            "video_token": "<video>"})
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    side = {"height": 32, "width": 32}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size=side, image_grid_pinpoints=pinpoints),
        video_processor=tf.LlavaOnevisionVideoProcessor(size=side), tokenizer=tok,
        num_image_tokens=16, vision_feature_select_strategy="full", chat_template=ONEVISION_TEMPLATE)
    config = tf.LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **tiny_text(len(tok), eos_token_id=tok.convert_tokens_to_ids(
            "<|im_end|>"), pad_token_id=tok.pad_token_id)},
        vision_config={"model_type": "siglip_vision_model", **tiny_vision()},
        image_token_id=tok.convert_tokens_to_ids("<image>"), video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1)
    return tf.LlavaOnevisionForConditionalGeneration(config), processor


def gemma3():
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]
    tok = trained_tokenizer(specials, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                  "image_token": "<image_soft_token>"})
    processor = tf.Gemma3Processor(image_processor=tf.Gemma3ImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tok, image_seq_length=4, chat_template=GEMMA3_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    config = tf.Gemma3Config(
        text_config=tiny_text(len(tok), head_dim=16, sliding_window=16, eos_token_id=[ids("<eos>"),
                              ids("<end_of_turn>")], pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>")),
        vision_config=tiny_vision(), mm_tokens_per_image=4, image_token_index=ids("<image_soft_token>"),
        boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"))
    return tf.Gemma3ForConditionalGeneration(config), processor


def idefics3():
    specials = ["<|end_of_text|>", "<|begin_of_text|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                "<global-img>"]
    tok = trained_tokenizer(specials, bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>",
                            pad_token="<|end_of_text|>")
    processor = tf.Idefics3Processor(
        image_processor=tf.Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                               max_image_size={"longest_edge": 32}),
        tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE)
    return idefics_model(tok, tf.Idefics3Config, tf.Idefics3ForConditionalGeneration), processor


def idefics_model(tok, config_cls, model_cls):
    """An Idefics3-architecture model (Idefics3, SmolVLM): a Llama text model, pixel shuffle by 2."""
    ids = tok.convert_tokens_to_ids
    config = config_cls(
        text_config={"model_type": "llama", **tiny_text(len(tok), eos_token_id=ids("<end_of_utterance>"),
                                                        pad_token_id=tok.pad_token_id)},
        vision_config=tiny_vision(), scale_factor=2, image_token_id=ids("<image>"), pad_token_id=tok.pad_token_id)
    return model_cls(config)


def qwen2_vl():
    return qwen_vl(tf.Qwen2VLProcessor, tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration,
                   {"depth": 1, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2})


def llava_next():
    tok = tf.AutoTokenizer.from_pretrained(MISTRAL_TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})  # <image> 32000, <pad> 32001, as in v1.6
    tok.add_special_tokens({"pad_token": "<pad>"})
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    processor = tf.LlavaNextProcessor(
        image_processor=tf.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                   image_grid_pinpoints=pinpoints),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE)
    config = tf.LlavaNextConfig(
        text_config={"model_type": "mistral", **tiny_text(len(tok), eos_token_id=tok.eos_token_id,
                                                          bos_token_id=tok.bos_token_id,
                                                          pad_token_id=tok.pad_token_id)},
        vision_config={"model_type": "clip_vision_model", **tiny_vision()},
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=-1)
    return tf.LlavaNextForConditionalGeneration(config), processor


def smolvlm():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                "<end_of_utterance>", "<global-img>"]
    tok = trained_tokenizer(specials, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>")
    processor = tf.SmolVLMProcessor(
        image_processor=tf.SmolVLMImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                                 max_image_size={"longest_edge": 32}),
        video_processor=tf.SmolVLMVideoProcessor(), tokenizer=tok, image_seq_len=4, chat_template=SMOLVLM_TEMPLATE)
    return idefics_model(tok, tf.SmolVLMConfig, tf.SmolVLMForConditionalGeneration), processor


def paligemma():
    """A prefix LM: bidirectional attention over image + prompt (token_type_ids 0), causal over the answer."""
    tok = trained_tokenizer(["<pad>", "<eos>", "<bos>", "<image>"], bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    processor = tf.PaliGemmaProcessor(
        image_processor=tf.SiglipImageProcessor(size={"height": 32, "width": 32}, image_seq_length=16),
        tokenizer=tok, chat_template=PALIGEMMA_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    config = tf.PaliGemmaConfig(
        text_config={"model_type": "gemma", **tiny_text(len(tok), head_dim=16, eos_token_id=ids("<eos>"),
                                                        pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"))},
        vision_config={"model_type": "siglip_vision_model", **tiny_vision()}, projection_dim=32,
        image_token_index=ids("<image>"), pad_token_id=ids("<pad>"))
    return tf.PaliGemmaForConditionalGeneration(config), processor


# builder and the weight scale at which its greedy replies vary between images and questions (Gemma 3's
# scaled embeddings settle on one token at 0.3)
FAMILIES = {"qwen2_5_vl": (qwen2_5_vl, 0.3), "llava_onevision": (llava_onevision, 0.3), "gemma3": (gemma3, 0.02),
            "idefics3": (idefics3, 0.3), "qwen2_vl": (qwen2_vl, 0.3), "llava_next": (llava_next, 0.3),
            "smolvlm": (smolvlm, 0.3), "paligemma": (paligemma, 0.3)}


def save_family(family: str, out: Path) -> Path:
    """Build, redraw the weights at the family's scale, save with a sampling generation config."""
    build, std = FAMILIES[family]
    torch.manual_seed(0)
    model, processor = build()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    own = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**own, **LEAKY}))
    return out
