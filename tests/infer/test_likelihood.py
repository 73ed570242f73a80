import math

import pytest
import torch
from PIL import Image

from dermvqa.infer.generate import load_model, prompt_text, user_turn
from dermvqa.infer.likelihood import continuation_text, option_logprobs, option_probs

IMAGES = [Image.new("RGB", (80, 72), c) for c in [(200, 60, 60), (40, 30, 20), (230, 210, 190)]]
QUESTIONS = ["Is this psoriasis?", "What is the most likely diagnosis?", "Which feature? A. scaly B. red"]
OPTIONS = [["yes", "no"], ["basal cell carcinoma", "melanoma", "seborrheic keratosis"], ["scaly", "red"]]


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def test_probabilities_form_a_distribution(model_and_processor):
    model, processor = model_and_processor
    probs = option_probs(model, processor, IMAGES, QUESTIONS, OPTIONS, batch_size=4)
    logps = option_logprobs(model, processor, IMAGES, QUESTIONS, OPTIONS, batch_size=4)
    for p, lp, opts in zip(probs, logps, OPTIONS):
        assert len(p) == len(opts) and math.isclose(sum(p), 1.0, rel_tol=1e-9) and min(p) >= 0
        assert all(x < 0 for x in lp)
        assert max(range(len(p)), key=p.__getitem__) == max(range(len(lp)), key=lp.__getitem__)


def test_batched_equals_one_by_one(model_and_processor):
    model, processor = model_and_processor
    batched = option_logprobs(model, processor, IMAGES, QUESTIONS, OPTIONS, batch_size=5)
    single = [option_logprobs(model, processor, [im], [q], [o], batch_size=1)[0]
              for im, q, o in zip(IMAGES, QUESTIONS, OPTIONS)]
    for b, s in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-4)


def _forward_logprob(model, processor, image, question, reply) -> tuple[float, int]:
    """Summed log-prob of `reply` read off one unpadded forward pass of prompt + reply, and its token count."""
    enc = processor(images=[image], text=[prompt_text(processor, [user_turn(question)])], return_tensors="pt")
    cont = processor.tokenizer(continuation_text(processor, question, reply), add_special_tokens=False)["input_ids"]
    ids = torch.cat([enc["input_ids"][0], torch.tensor(cont)])[None]
    with torch.no_grad():
        logp = model(input_ids=ids, pixel_values=enc["pixel_values"]).logits[0].float().log_softmax(-1)
    start = ids.shape[1] - len(cont)
    return sum(logp[start + j - 1, t].item() for j, t in enumerate(cont)), len(cont)


def test_matches_a_plain_forward_pass(model_and_processor):
    """Summed log-prob equals the one read off an unpadded full forward pass of prompt + reply."""
    model, processor = model_and_processor
    q, opt = QUESTIONS[1], OPTIONS[1][1]
    expected, n_tokens = _forward_logprob(model, processor, IMAGES[1], q, opt)
    got = option_logprobs(model, processor, [IMAGES[1]], [q], [OPTIONS[1]], batch_size=3)[0][1]
    assert got == pytest.approx(expected, abs=1e-4)
    mean = option_logprobs(model, processor, [IMAGES[1]], [q], [OPTIONS[1]], reduce="mean")[0][1]
    assert mean == pytest.approx(expected / n_tokens, abs=1e-4)


def test_reply_continuation_ends_the_turn(model_and_processor):
    _, processor = model_and_processor
    assert continuation_text(processor, "Is it?", "psoriasis").startswith("psoriasis<|im_end|>")


def test_bad_input(model_and_processor):
    model, processor = model_and_processor
    with pytest.raises(ValueError, match="no options"):
        option_logprobs(model, processor, IMAGES[:1], QUESTIONS[:1], [[]])
    with pytest.raises(ValueError, match="2 questions"):
        option_logprobs(model, processor, IMAGES[:1], QUESTIONS[:2], OPTIONS[:1])


def test_finding_families_score_the_whole_trained_reply(model_and_processor):
    """Yes/no: the model's greedy finding + each verdict, equal to a manual forward pass; closed morphology, like
    multiple choice, is trained on the bare option."""
    from dermvqa.infer.generate import answer_batch
    from dermvqa.infer.likelihood import finding_of, scored_replies

    model, processor = model_and_processor
    fams = ["yes_no", "diagnosis", "morphology"]
    replies = scored_replies(model, processor, IMAGES, QUESTIONS, OPTIONS, fams, max_new_tokens=12)
    greedy = answer_batch(model, processor, IMAGES, QUESTIONS, max_new_tokens=12)
    assert replies[1] == OPTIONS[1] and replies[2] == OPTIONS[2]  # trained on the bare option
    assert replies[0] == [f"{finding_of(greedy[0])}. Answer: {o}." for o in OPTIONS[0]]
    q, reply = QUESTIONS[0], replies[0][1]
    expected, _ = _forward_logprob(model, processor, IMAGES[0], q, reply)
    assert option_logprobs(model, processor, IMAGES[:1], [q], replies[:1])[0][1] == pytest.approx(expected, abs=1e-4)


def test_finding_of_reads_the_finding():
    from dermvqa.infer.likelihood import finding_of

    assert finding_of("The lesion looks like eczema, not psoriasis. Answer: no.") == \
        "The lesion looks like eczema, not psoriasis"
    assert finding_of("The lesion shows scale, red.") == "The lesion shows scale, red"
