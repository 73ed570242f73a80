"""The hf: adapter on tiny random-weight models of five families built here from configs: greedy answers equal a
hand-written argmax loop, batch 1 equals batch 8, the model's own sampling config does not leak in; option
likelihood equals a direct forward pass; hf: on a dermvqa LLaVA folder answers as dermvqa's own path does."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from PIL import Image
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from dermvqa.eval.adapters.hf import TESTED_MODEL_TYPES, HFAdapter
from dermvqa.model.tiny import train_bpe
from tests.conftest import SHARED_DATA, TINY_TEXTS

QWEN_TOKENIZER = SHARED_DATA / "tokenizers" / "qwen2.5"
QUESTIONS = ["What is the most likely diagnosis?", "Is this psoriasis?", "Which colour is the lesion?",
             "Describe the border.", "Is it scaly?", "Where is the lesion?", "Is this melanoma?", "How big is it?"]
LEAKY = {"do_sample": True, "temperature": 0.7, "repetition_penalty": 1.3, "top_k": 50}
MAX_NEW = 6

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


def tiny_text(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=512, **extra)


def tiny_vision(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                patch_size=8, **extra)


def trained_tokenizer(specials: list[str], **roles) -> TokenizersBackend:
    return TokenizersBackend(tokenizer_object=train_bpe(TINY_TEXTS + QUESTIONS, 300, specials), **roles)


def qwen2_5_vl():
    tok = tf.AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
    grid = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = tf.Qwen2_5_VLProcessor(image_processor=tf.Qwen2VLImageProcessor(min_pixels=256, max_pixels=256, **grid),
                                    video_processor=tf.Qwen2VLVideoProcessor(**grid), tokenizer=tok,
                                    chat_template=QWEN_VL_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    config = tf.Qwen2_5_VLConfig(
        text_config=tiny_text(len(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                              eos_token_id=ids("<|im_end|>"), pad_token_id=tok.pad_token_id),
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                       "window_size": 8, "fullatt_block_indexes": [0], **grid, "spatial_merge_size": 2},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"))
    return tf.Qwen2_5_VLForConditionalGeneration(config), processor


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
    ids = tok.convert_tokens_to_ids
    config = tf.Idefics3Config(
        text_config={"model_type": "llama", **tiny_text(len(tok), eos_token_id=ids("<end_of_utterance>"),
                                                        pad_token_id=tok.pad_token_id)},
        vision_config=tiny_vision(), scale_factor=2, image_token_id=ids("<image>"), pad_token_id=tok.pad_token_id)
    return tf.Idefics3ForConditionalGeneration(config), processor


# builder and the weight scale at which its greedy replies vary between images and questions (Gemma 3's
# scaled embeddings settle on one token at 0.3)
FAMILIES = {"qwen2_5_vl": (qwen2_5_vl, 0.3), "llava_onevision": (llava_onevision, 0.3), "gemma3": (gemma3, 0.02),
            "idefics3": (idefics3, 0.3)}


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


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(folder, the hf: adapter loaded from it) per family, loaded once (a 151k-token tokenizer is slow to
    load); one torch thread, since on a shared 2-core machine thread contention makes tiny models 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = save_family(request.param, tmp_path_factory.mktemp(request.param))
    yield folder, HFAdapter(f"hf:{folder}", device="cpu")
    torch.set_num_threads(threads)


def images() -> list[Image.Image]:
    return [Image.new("RGB", (24 + 4 * i, 32), (30 * i, 255 - 25 * i, 90)) for i in range(len(QUESTIONS))]


def per_token(inputs: dict, new_id: int) -> dict:
    """inputs with one more token: its id, attention 1, and 0 (text) in every other per-token tensor."""
    width = inputs["input_ids"].shape[1]
    grown = dict(inputs)
    for key, value in inputs.items():
        if value.dim() == 2 and value.shape[1] == width:
            extra = new_id if key == "input_ids" else int(key == "attention_mask")
            grown[key] = torch.cat([value, torch.full((1, 1), extra, dtype=value.dtype)], dim=1)
    return grown


@torch.no_grad()
def argmax_loop(model, processor, image, question, stop: set[int]) -> str:
    """Greedy decoding by hand: one full forward per token (no cache, no generate()), argmax, stop at eos."""
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    new = []
    for _ in range(MAX_NEW):
        token = int(model(**inputs).logits[0, -1].argmax())
        if token in stop:
            break
        new.append(token)
        inputs = per_token(inputs, token)
    return processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_tested_families_are_the_ones_built_here():
    assert set(TESTED_MODEL_TYPES) == set(FAMILIES) | {"llava"}


def test_greedy_equals_argmax_loop_batch_1_and_8_and_own_sampling_config_is_ignored(family):
    adapter = family[1]
    model, processor = adapter.model, adapter.processor
    assert model.generation_config.do_sample and model.generation_config.repetition_penalty == 1.3
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos]) | {processor.tokenizer.eos_token_id}
    ims = images()
    expected = [argmax_loop(model, processor, im, q, stop) for im, q in zip(ims, QUESTIONS)]
    assert len(set(expected)) > 2, expected  # replies differ, so the comparison can fail
    batch8 = [r["reply"] for r in adapter.generate(ims, QUESTIONS, MAX_NEW)]
    batch1 = [adapter.generate([im], [q], MAX_NEW)[0]["reply"] for im, q in zip(ims, QUESTIONS)]
    assert batch8 == expected and batch1 == expected
    torch.manual_seed(0)  # the model's own config, were it used, samples and penalises: other answers
    batch = adapter.encode(ims, [adapter.prompt(q) for q in QUESTIONS])
    leaked = model.generate(**batch, max_new_tokens=MAX_NEW)
    leaked_text = [t.strip() for t in processor.batch_decode(leaked[:, batch["input_ids"].shape[1]:],
                                                            skip_special_tokens=True)]
    assert leaked_text != expected


def test_option_likelihood_equals_direct_forward(family):
    adapter = family[1]
    model, processor = adapter.model, adapter.processor
    ims, options = images()[:2], [["psoriasis", "eczema", "melanoma"], ["red", "brown"]]
    rows = adapter.option_probs(ims, QUESTIONS[:2], options, ["diagnosis", "colour"], MAX_NEW, "sum")
    for im, q, opts, row in zip(ims, QUESTIONS[:2], options, rows):
        logps = []
        for opt in opts:  # the whole assistant turn after the generation prompt, token by token
            inputs = processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": q}]}],
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
            total = 0.0
            for token in adapter.continuation_ids(q, opt):
                with torch.no_grad():
                    total += float(torch.log_softmax(model(**inputs).logits[0, -1].float(), -1)[token])
                inputs = per_token(inputs, token)
            logps.append(total)
        direct = torch.softmax(torch.tensor(logps, dtype=torch.float64), 0).tolist()
        assert row["probs"] == pytest.approx(direct, abs=1e-5)
        assert row["reply"] == opts[max(range(len(opts)), key=direct.__getitem__)]


def test_manifest_names_weights_template_and_pinned_decoding(family):
    family_dir, adapter = family
    manifest = adapter.manifest()
    weights = sorted(family_dir.glob("*.safetensors"))
    assert manifest["weights"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in weights} and weights
    assert manifest["path"] == str(family_dir.resolve()) and not manifest["untested_family"]
    assert manifest["model_type"] == adapter.model.config.model_type
    decoding = manifest["decoding"]
    assert decoding["do_sample"] is False and decoding["num_beams"] == 1 and decoding["repetition_penalty"] == 1.0
    assert decoding["no_repeat_ngram_size"] == 0 and decoding["temperature"] is None and decoding["top_k"] is None
    mean = adapter.processor.image_processor.image_mean
    assert adapter.blank_image().getpixel((0, 0)) == tuple(round(255 * m) for m in mean)


def test_hf_on_a_dermvqa_llava_folder_answers_as_dermvqa_does(quickstart_sized_model_dir):
    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.infer.likelihood import continuation_text, option_probs, scored_replies

    adapter = HFAdapter(f"hf:{quickstart_sized_model_dir}", device="cpu")
    model, processor = load_model(quickstart_sized_model_dir, device="cpu")
    ims = images()
    ours = answer_batch(model, processor, ims, QUESTIONS, max_new_tokens=12)
    assert len(set(ours)) > 2 and [r["reply"] for r in adapter.generate(ims, QUESTIONS, 12)] == ours
    assert adapter.continuation_ids("Is it red?", "yes") == processor.tokenizer(
        continuation_text(processor, "Is it red?", "yes"), add_special_tokens=False)["input_ids"]
    options, families = [["yes", "no"], ["psoriasis", "eczema", "melanoma"]], ["yes_no", "diagnosis"]
    replies = scored_replies(model, processor, ims[:2], QUESTIONS[:2], options, families, 12)
    expected = option_probs(model, processor, ims[:2], QUESTIONS[:2], replies)
    rows = adapter.option_probs(ims[:2], QUESTIONS[:2], options, families, 12, "sum")
    assert [r["probs"] for r in rows] == [pytest.approx(p, abs=1e-6) for p in expected]
    assert [r["scored_reply"] for r in rows] == [rep[max(range(len(p)), key=p.__getitem__)]
                                                 for rep, p in zip(replies, expected)]
    assert adapter.manifest()["model_type"] == "llava"


def test_untested_family_is_refused_unless_allowed_and_then_recorded(tiny_model_dir, monkeypatch):
    from dermvqa.eval.adapters import hf

    monkeypatch.setattr(hf, "TESTED_MODEL_TYPES", ("gemma3",))
    with pytest.raises(ValueError, match=r"model_type 'llava' is not a tested family \(gemma3\)"):
        HFAdapter(f"hf:{tiny_model_dir}")
    assert HFAdapter(f"hf:{tiny_model_dir}", device="cpu", allow_untested=True).manifest()["untested_family"]


def test_remote_code_runs_only_with_the_flag(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "auto_map": {
        "AutoConfig": "mystery.MysteryConfig"}}))
    (tmp_path / "mystery.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ValueError):
        HFAdapter(f"hf:{tmp_path}")
    assert not marker.exists()


def test_hub_cache_folder_is_named_by_hub_id_and_commit(tiny_model_dir, tmp_path):
    snapshot = tmp_path / "models--org--tiny-llava" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in Path(tiny_model_dir).iterdir():
        (snapshot / f.name).symlink_to(f)
    manifest = HFAdapter(f"hf:{snapshot}", device="cpu").manifest()
    assert (manifest["hub_id"], manifest["revision"]) == ("org/tiny-llava", "0123abcd")
    assert manifest["chat_template_sha256"] == hashlib.sha256(
        tf.AutoProcessor.from_pretrained(tiny_model_dir).chat_template.encode()).hexdigest()


def test_bad_spec_and_missing_folder_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="hf:HUB_ID or hf:FOLDER"):
        HFAdapter("llava:x")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        HFAdapter(f"hf:{tmp_path / 'absent'}")
