import pytest
from transformers import AutoProcessor

from dermvqa.data.conversation import IGNORE_INDEX, TooLong, record_messages, tokenize_chat
from dermvqa.infer.generate import prompt_text, user_turn

REC = {"question": "Is this psoriasis?", "answer": "The lesion looks like eczema, not psoriasis. Answer: no."}


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


def _tok(processor, messages, max_length=512, n_image=64):
    return tokenize_chat(messages, processor.tokenizer, processor.chat_template, processor.image_token,
                         n_image, max_length)


def test_labels_cover_exactly_the_answer_and_end_token(processor):
    ids, labels = _tok(processor, record_messages(REC))
    tok = processor.tokenizer
    labelled = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(labelled) == REC["answer"] + "<|im_end|>\n"
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels))


def test_prompt_ids_equal_what_inference_feeds(processor):
    ids, labels = _tok(processor, record_messages(REC), n_image=1)
    first = next(k for k, lab in enumerate(labels) if lab != IGNORE_INDEX)
    prompt = prompt_text(processor, [user_turn(REC["question"])])
    assert ids[:first] == processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_image_placeholder_expands_to_image_seq_length(processor):
    ids, _ = _tok(processor, record_messages(REC), n_image=64)
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 64


def test_multi_turn_masks_each_user_turn(processor):
    msgs = record_messages(REC) + [{"role": "user", "content": "And the colour?"},
                                   {"role": "assistant", "content": "red"}]
    ids, labels = _tok(processor, msgs)
    labelled = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert labelled == REC["answer"] + "<|im_end|>\n" + "red<|im_end|>\n"
    assert "colour" not in labelled


def test_prompt_longer_than_max_length_is_an_error_not_a_cut(processor):
    with pytest.raises(ValueError, match="max_length"):
        _tok(processor, record_messages(REC), max_length=40, n_image=64)


def test_answer_that_does_not_fit_is_refused_never_cut(processor):
    long = dict(REC, answer="word " * 200)
    with pytest.raises(TooLong, match="the answer would be cut"):
        _tok(processor, record_messages(long), max_length=120, n_image=64)
    ids, labels = _tok(processor, record_messages(long), max_length=1000, n_image=64)
    assert len(ids) > 120 and labels[-1] != IGNORE_INDEX  # whole, end-of-turn token included


def test_template_that_rewrites_earlier_answers_is_a_clear_error(processor):
    """Reasoning-style templates that re-render earlier answers differently cannot be masked per turn."""
    rewriting = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                 "{% if m['role'] == 'assistant' and not loop.last %}(earlier answer){% else %}{{ m['content'] }}"
                 "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "Is this psoriasis?"}, {"role": "assistant", "content": "no"},
            {"role": "user", "content": "And the colour?"}, {"role": "assistant", "content": "red"}]
    with pytest.raises(ValueError, match=r"prefixes as prefixes.*Expected a continuation of .*assistant\\nno<"):
        tokenize_chat(msgs, processor.tokenizer, rewriting, processor.image_token, 64, 512)
