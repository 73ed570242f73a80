import io

import pytest
from PIL import Image
from typer.testing import CliRunner

from dermvqa.infer.chat import (ChatSession, PromptTooLong, ReplyStream, context_length, conversation,
                                count_prompt_tokens, generate_replies)
from dermvqa.infer.generate import answer_batch, load_model
from dermvqa.serve.terminal import chat_loop
from tests.conftest import PAD_PHOTO

Q1, Q2 = "What is the most likely diagnosis for this lesion?", "Is this psoriasis?"


@pytest.fixture(scope="module")
def chatty(chatty_model_dir):
    return load_model(chatty_model_dir, device="cpu")


@pytest.fixture(scope="module")
def photo():
    return Image.open(PAD_PHOTO).convert("RGB")


def test_streamed_reply_equals_batched_greedy_answer(chatty, photo):
    model, processor = chatty
    session = ChatSession(model, processor, photo, max_new_tokens=12)
    stream = session.ask(Q1)
    chunks = list(stream)
    assert len(chunks) > 1, "the answer should arrive in several pieces"
    expected = answer_batch(model, processor, [photo], [Q1], max_new_tokens=12)[0]
    assert expected and "".join(chunks) == stream.reply.text == expected
    assert session.turns == [(Q1, expected)]


def test_second_turn_sees_the_first(chatty, photo):
    model, processor = chatty
    session = ChatSession(model, processor, photo, max_new_tokens=10)
    first = "".join(session.ask(Q1))
    second = "".join(session.ask(Q2))
    history = conversation([(Q1, first)], Q2)
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert sum(p["type"] == "image" for m in history if isinstance(m["content"], list) for p in m["content"]) == 1
    assert second == generate_replies(model, processor, [photo], [history], 10)[0].text
    assert session.turns == [(Q1, first), (Q2, second)]
    session.reset()
    assert session.turns == [] and session.image is photo


def test_old_turns_are_dropped_to_fit_the_context(chatty, photo):
    model, processor = chatty
    session = ChatSession(model, processor, photo, max_new_tokens=8)
    long_answer = "scaly red plaque " * 40
    session.turns = [(Q1, long_answer), (Q2, long_answer), (Q1, "short")]
    assert count_prompt_tokens(processor, conversation(session.turns, Q2)) + 8 > context_length(model)
    reply = "".join(session.ask(Q2))
    assert session.dropped_turns >= 1
    kept = session.turns[:-1]
    assert kept == [(Q1, long_answer), (Q2, long_answer), (Q1, "short")][session.dropped_turns:]
    assert session.turns[-1] == (Q2, reply)
    assert count_prompt_tokens(processor, conversation(kept, Q2)) + 8 <= context_length(model)


def test_question_too_long_for_the_context_is_refused(chatty, photo):
    model, processor = chatty
    session = ChatSession(model, processor, photo, max_new_tokens=8)
    with pytest.raises(PromptTooLong, match="context holds 512 tokens"):
        session.ask("Is this psoriasis? " * 200)
    assert session.turns == []


def test_no_image_and_empty_question_are_clear_errors(chatty, photo):
    model, processor = chatty
    with pytest.raises(ValueError, match="no image loaded"):
        ChatSession(model, processor).ask(Q1)
    with pytest.raises(ValueError, match="question is empty"):
        ChatSession(model, processor, photo).ask("  ")


def test_batch_rows_keep_their_own_token_limits(chatty, photo):
    model, processor = chatty
    red = Image.new("RGB", (90, 70), (200, 40, 40))
    convs = [conversation([], Q1), conversation([], Q2), conversation([("Hi", "Hello")], Q2)]
    images, limits = [photo, red, photo], [3, 9, 6]
    batched = generate_replies(model, processor, images, convs, limits)
    single = [generate_replies(model, processor, [im], [c], n)[0] for im, c, n in zip(images, convs, limits)]
    assert batched == single
    assert all(r.completion_tokens <= n for r, n in zip(batched, limits))
    assert len({r.text for r in batched}) > 1


def test_generation_error_reaches_the_reader_instead_of_hanging(chatty, photo):
    model, processor = chatty
    two_images = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": Q1}]}]
    stream = ReplyStream(model, processor, photo, two_images, 8).start()
    with pytest.raises(ValueError):
        list(stream)


def test_terminal_commands(chatty, photo, chatty_model_dir):
    model, processor = chatty
    session = ChatSession(model, processor, None, max_new_tokens=8)
    script = iter(["What is it?", f"/image {PAD_PHOTO}", Q1, "/report", "/reset", "/unknown", "/quit", "never read"])
    out = io.StringIO()
    answered = chat_loop(session, lambda image: "REPORT for %dx%d\n" % image.size, read=lambda _: next(script), out=out)
    text = out.getvalue()
    expected = answer_batch(model, processor, [photo], [Q1], max_new_tokens=8)[0]
    assert answered == 1
    assert "error: no image loaded" in text
    assert f"model> {expected}\n" in text
    assert "REPORT for 400x400" in text
    assert "(conversation cleared)" in text and session.turns == []
    assert "unknown command /unknown" in text


def test_cli_answers_one_question(chatty, photo, chatty_model_dir):
    from dermvqa.cli import app

    model, processor = chatty
    result = CliRunner().invoke(app, ["chat", "--model", str(chatty_model_dir), "--image", str(PAD_PHOTO),
                                      "--question", Q1, "--max-new-tokens", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == answer_batch(model, processor, [photo], [Q1], max_new_tokens=8)[0]


def test_cli_rejects_a_text_file_posing_as_an_image(chatty_model_dir, tmp_path):
    from dermvqa.cli import app

    fake = tmp_path / "photo.png"
    fake.write_text("not an image")
    result = CliRunner().invoke(app, ["chat", "--model", str(chatty_model_dir), "--image", str(fake),
                                      "--question", Q1])
    assert result.exit_code == 2
    assert "not a readable image" in result.output


def test_terminal_explains_the_last_answer_and_abstains_on_an_unlike_photo(trusted_model_dir, tmp_path, monkeypatch):
    from dermvqa.trust.ood import NOTICE, load_summary
    from dermvqa.serve.cli import _explain_fn

    model_dir, world = trusted_model_dir
    model, processor = load_model(model_dir, device="cpu")
    ood = load_summary(model_dir)
    familiar = world / "images" / "synthetic" / "lesion_00003.png"
    session = ChatSession(model, processor, None, max_new_tokens=8)
    script = iter(["/explain", f"/image {familiar}", Q1, "/explain", f"/image {PAD_PHOTO}", Q1, "/quit"])
    out = io.StringIO()
    monkeypatch.chdir(tmp_path)
    answered = chat_loop(session, read=lambda _: next(script), out=out,
                         ood_fn=lambda im: ood.check(model, processor, im), explain_fn=_explain_fn(model, processor))
    text = out.getvalue()
    assert answered == 1 and "nothing to explain yet" in text
    assert "explain_1.png (overlay)" in text and (tmp_path / "explain_1.png").is_file()
    assert text.count(NOTICE) == 2  # announced on loading the PAD photo, then instead of the answer
    assert text.rstrip().endswith("examined in person.")
