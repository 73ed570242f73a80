"""The hf: adapter on tiny random-weight models of nine families (eight built from configs in hf_families.py, one a
prefix LM, and a dermvqa LLaVA folder): greedy answers equal a hand-written argmax loop, batch 1 equals batch 8, the
model's own sampling config does not leak in; option likelihood equals a direct forward pass, causal over the answer
for the prefix LM; hf: on a dermvqa LLaVA folder answers as dermvqa's own path does."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from PIL import Image

from dermvqa.eval.backends.hf import PREFIX_LM_MODEL_TYPES, TESTED_MODEL_TYPES, HFAdapter
from tests.eval.hf_families import FAMILIES, QUESTIONS, save_family

MAX_NEW = 6


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


def per_token(inputs: dict, new_id: int, suffix_type: int = 0) -> dict:
    """inputs with one more token: its id, attention 1, token type `suffix_type` (1: a prefix LM's causal
    suffix), and 0 (text) in every other per-token tensor."""
    width = inputs["input_ids"].shape[1]
    grown = dict(inputs)
    for key, value in inputs.items():
        if value.dim() == 2 and value.shape[1] == width:
            extra = {"input_ids": new_id, "attention_mask": 1, "token_type_ids": suffix_type}.get(key, 0)
            grown[key] = torch.cat([value, torch.full((1, 1), extra, dtype=value.dtype)], dim=1)
    return grown


def prompt_inputs(processor, image, question) -> dict:
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    inputs.pop("labels", None)
    return inputs


@torch.no_grad()
def argmax_loop(model, processor, image, question, stop: set[int]) -> str:
    """Greedy decoding by hand: one full forward per token (no cache, no generate()), argmax, stop at eos."""
    inputs = prompt_inputs(processor, image, question)
    suffix_type = int(model.config.model_type in PREFIX_LM_MODEL_TYPES)
    new = []
    for _ in range(MAX_NEW):
        token = int(model(**inputs).logits[0, -1].argmax())
        if token in stop:
            break
        new.append(token)
        inputs = per_token(inputs, token, suffix_type)
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
            inputs = prompt_inputs(processor, im, q)
            total = 0.0
            for token in adapter.continuation_ids(q, opt):
                with torch.no_grad():
                    total += float(torch.log_softmax(model(**inputs).logits[0, -1].float(), -1)[token])
                inputs = per_token(inputs, token, int(adapter.model_type in PREFIX_LM_MODEL_TYPES))
            logps.append(total)
        direct = torch.softmax(torch.tensor(logps, dtype=torch.float64), 0).tolist()
        assert row["probs"] == pytest.approx(direct, abs=1e-5)
        assert row["reply"] == opts[max(range(len(opts)), key=direct.__getitem__)]


def test_prefix_lm_answer_scored_causally_not_as_prefix(family, monkeypatch):
    """PaliGemma: the answer appended as bidirectional prefix (token type 0) scores otherwise than the causal
    suffix the direct forward above checks, so that test can tell the two apart."""
    adapter = family[1]
    if adapter.model_type not in PREFIX_LM_MODEL_TYPES:
        return
    replies = ["psoriasis", "eczema", "melanoma"]
    causal = adapter.option_logprobs(images()[0], QUESTIONS[0], replies, "sum")
    monkeypatch.setattr("dermvqa.eval.backends.hf.PREFIX_LM_MODEL_TYPES", ())
    as_prefix = adapter.option_logprobs(images()[0], QUESTIONS[0], replies, "sum")
    assert max(abs(a - b) for a, b in zip(causal, as_prefix)) > 1e-2


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
    from dermvqa.eval.backends import hf

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
