"""A tiny random-init LLaVA (CLIP vision + Qwen2 text) with a tokenizer trained on the fly: no downloads."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config)
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from atomic_files import honour_umask
from dermvqa.model.generation import greedy_config
from dermvqa.model.processor import (CHATML_TEMPLATE, IMAGE_TOKEN, build_processor,
                                     clip_image_processor, image_seq_length)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]


def train_bpe(texts, vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Byte-level BPE trained on `texts` (so any input text still tokenizes); specials get the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_tokenizer(texts, vocab_size: int = 2000) -> TokenizersBackend:
    """The tiny model's tokenizer: byte-level BPE on `texts` with ChatML specials."""
    return TokenizersBackend(tokenizer_object=train_bpe(texts, vocab_size, SPECIAL_TOKENS), eos_token="<|im_end|>",
                             pad_token="<|endoftext|>", extra_special_tokens={"image_token": IMAGE_TOKEN},
                             padding_side="left")


def build_tiny_llava(out_dir: str | Path, texts, seed: int = 0, image_size: int = 64, patch_size: int = 8,
                     vision_width: int = 128, vision_layers: int = 3, text_width: int = 192,
                     text_layers: int = 4, vocab_size: int = 2000, feature_layer: int = -1):
    """Build, save and return (model, processor). `texts` train the tokenizer (questions + answers)."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, vocab_size)
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, hidden_size=vision_width,
                              intermediate_size=4 * vision_width, num_hidden_layers=vision_layers,
                              num_attention_heads=max(1, vision_width // 32), projection_dim=vision_width)
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=4 * text_width,
                       num_hidden_layers=text_layers, num_attention_heads=max(1, text_width // 32),
                       num_key_value_heads=max(1, text_width // 64), max_position_embeddings=512,
                       tie_word_embeddings=True, bos_token_id=None,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         projector_hidden_act="gelu", vision_feature_layer=feature_layer,
                         vision_feature_select_strategy="default",
                         image_seq_length=image_seq_length(image_size, patch_size))
    model = LlavaForConditionalGeneration(config)
    model.generation_config = greedy_config([tokenizer.eos_token_id], tokenizer.pad_token_id)
    processor = build_processor(clip_image_processor(image_size), tokenizer, patch_size, CHATML_TEMPLATE)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    honour_umask(out_dir)  # safetensors writes its files 0600
    return model, processor
