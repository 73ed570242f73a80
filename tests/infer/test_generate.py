from PIL import Image

from dermvqa.infer.generate import answer_batch, load_model


def test_batched_greedy_equals_one_by_one(tiny_model_dir):
    model, processor = load_model(tiny_model_dir, device="cpu")
    images = [Image.new("RGB", (96, 96), c) for c in [(200, 80, 80), (90, 60, 40), (240, 220, 200)]]
    questions = ["Is this psoriasis?", "Which of these features is visible? A. scaly B. red", "What is it?"]
    batched = answer_batch(model, processor, images, questions, max_new_tokens=6)
    single = [answer_batch(model, processor, [im], [q], max_new_tokens=6)[0] for im, q in zip(images, questions)]
    assert batched == single
    assert len(batched) == 3


def test_missing_folder_is_a_clear_error(tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError, match="neither config.json"):
        load_model(tmp_path, device="cpu")
