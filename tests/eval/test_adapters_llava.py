"""llava: adapter = the direct dermvqa.infer path; load_adapter's spec grammar and the constructor calls it makes."""
import json

import pytest

from dermvqa.eval import backends, run_eval
from dermvqa.eval.backends import load_adapter, normalize_spec, split_spec
from dermvqa.eval.backends.llava import LlavaAdapter
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.runner import load_image

FAST = dict(max_new_tokens=6, n_boot=20, plots=False)


def test_adapter_equals_direct_path(varied_model_dir, qa_world):
    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.infer.likelihood import option_probs, scored_replies

    items = load_bench(f"qa:{qa_world}").items[:8]
    images, questions = [load_image(it) for it in items], [it.question for it in items]
    model, processor = load_model(varied_model_dir)
    adapter = load_adapter(str(varied_model_dir))
    assert isinstance(adapter, LlavaAdapter) and adapter.spec == f"llava:{varied_model_dir}"
    direct = answer_batch(model, processor, images, questions, max_new_tokens=6)
    assert [r["reply"] for r in adapter.generate(images, questions, 6)] == direct
    assert len(set(direct)) > 3                                   # varied replies: the comparison can fail

    closed = [it for it in items if it.options]
    imgs, qs = [load_image(it) for it in closed], [it.question for it in closed]
    opts, fams = [it.options for it in closed], [it.family for it in closed]
    replies = scored_replies(model, processor, imgs, qs, opts, fams, 6)
    probs = option_probs(model, processor, imgs, qs, replies, batch_size=16)
    rows = adapter.option_probs(imgs, qs, opts, fams, 6, "sum")
    for row, p, r, o in zip(rows, probs, replies, opts):
        k = p.index(max(p))
        assert row == {"reply": o[k], "scored_reply": r[k], "probs": p}

    mean = processor.image_processor.image_mean
    assert adapter.blank_image().getpixel((5, 5)) == tuple(round(255 * m) for m in mean)


def answers(out):
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


def test_run_through_adapter_batch_one_equals_eight_and_direct(varied_model_dir, qa_world, tmp_path):
    from dermvqa.infer.generate import answer_batch, load_model

    spec = f"qa:{qa_world}"
    run_eval(f"llava:{varied_model_dir}", spec, tmp_path / "b1", batch_size=1, limit=8, **FAST)
    run_eval(varied_model_dir, spec, tmp_path / "b8", batch_size=8, limit=8, **FAST)
    one, eight = answers(tmp_path / "b1"), answers(tmp_path / "b8")
    assert sorted(map(json.dumps, one)) == sorted(map(json.dumps, eight)) and len(one) == 16
    items = load_bench(spec).items[:8]
    model, processor = load_model(varied_model_dir)
    direct = answer_batch(model, processor, [load_image(it) for it in items], [it.question for it in items], 6)
    assert [r["reply"] for r in eight if not r["blind"]] == direct
    assert json.loads((tmp_path / "b1" / "run.json").read_text())["model"] == f"llava:{varied_model_dir}"


def test_spec_grammar(tmp_path):
    assert split_spec("runs/x/model") == ("llava", "runs/x/model")
    assert split_spec("hf:Qwen/Qwen2.5-VL-3B-Instruct") == ("hf", "Qwen/Qwen2.5-VL-3B-Instruct")
    assert split_spec("openai:gpt-4o@https://api.example.com/v1") == ("openai", "gpt-4o@https://api.example.com/v1")
    assert normalize_spec(str(tmp_path)) == f"llava:{tmp_path}"
    with pytest.raises(ValueError, match="unknown backend 'vllm'; accepted: llava:DIR .*hf:ID_OR_DIR, openai:MODEL@URL"):
        split_spec("vllm:Qwen/Qwen2-VL")
    with pytest.raises(ValueError, match="nothing after hf:"):
        split_spec("hf:")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_adapter(str(tmp_path / "nothing"))


class Recorder:
    """Stands in for a backend class: records how load_adapter constructs it."""
    calls = []

    def __init__(self, spec, **kwargs):
        Recorder.calls.append((spec, kwargs))


def test_backends_get_their_own_options(monkeypatch):
    for kind in ("hf", "openai"):
        monkeypatch.setitem(backends.ADAPTERS, kind, (__name__, "Recorder"))
    opts = dict(device="cpu", batch_size=8, trust_remote_code=True, allow_untested=None, api_key_env="KEY",
                concurrency=4, cache_dir="out")
    load_adapter("hf:org/model", **opts)
    load_adapter("openai:m@http://127.0.0.1:9/v1", **opts)
    assert Recorder.calls == [("hf:org/model", {"device": "cpu", "trust_remote_code": True}),
                              ("openai:m@http://127.0.0.1:9/v1", {"api_key_env": "KEY", "concurrency": 4,
                                                                  "cache_dir": "out"})]


def test_missing_backend_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(backends.ADAPTERS, "hf", ("dermvqa.eval.backends.not_there", "HFAdapter"))
    with pytest.raises(ValueError, match="the hf: backend is not available .*not_there"):
        load_adapter("hf:org/model")
