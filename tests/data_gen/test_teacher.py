"""Teacher plumbing with a tiny random chat model built on the fly, and the leak filter with scripted outputs."""
import pytest

from data_gen.records import read_records
from data_gen.teacher import LeakFilter, Teacher, teach
from tests.conftest import SAMPLE_CSV
from tests.data_gen.conftest import real_rows


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [r["caption"] for r in real_rows()] + ["Q: What is visible? A: red scaly patches."]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=300, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s>{% endfor %}"
                          "{% if add_generation_prompt %}<s> assistant :{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    out = tmp_path_factory.mktemp("tiny_chat")
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def test_teacher_runs_a_local_model_and_resumes(real_run, tmp_path, tiny_chat_model):
    _, records = real_run
    qa_dir = tmp_path / "qa"
    from data_gen.records import QARecord, write_parquet
    from dataclasses import fields
    names = {f.name for f in fields(QARecord)}
    write_parquet([QARecord(**{k: v for k, v in r.items() if k in names}) for r in records[:40]],
                  qa_dir / "train" / "part-00000.parquet")
    teacher = Teacher.from_pretrained(str(tiny_chat_model), device="cpu", max_new_tokens=6)
    report = teach(qa_dir, SAMPLE_CSV, tmp_path / "teacher", teacher, batch_size=4, progress=False)
    kept = read_records(tmp_path / "teacher")
    rejected = sum(v["count"] for v in report["rejections"].values())
    from data_gen.teacher import OPEN_FAMILIES
    jobs = sum(r["family"] in OPEN_FAMILIES and r["answer_type"] == "open" for r in records[:40]) + \
        len({r["image"] for r in records[:40]})
    assert report["kept"] == len(kept) and len(kept) + rejected == jobs  # every job is kept or counted
    assert all(r["family"] in ("teacher_paraphrase", "teacher_free") for r in kept)
    assert all("caption (hidden context)" in r["fields"] for r in kept)
    again = teach(qa_dir, SAMPLE_CSV, tmp_path / "teacher", teacher, progress=False)
    assert again["kept"] == 0 and again["rejections"] == {}  # resumed: the part is already done


def test_leak_filter_rejects_caption_only_facts(real_run, tmp_path):
    _, records = real_run
    open_recs = [r for r in records if r["family"] == "diagnosis"][:3]
    scripted = iter(["According to the caption, which disease is this?", "Q: Who is this? A: a 65 year old farmer",
                     "Which condition does this picture show?", "Q: What colour is the skin? A: red patches",
                     "Name the disease seen here.", "garbage without the format"])

    def fake_generate(batch):
        return [next(scripted) for _ in batch]

    qa_dir = tmp_path / "qa"
    from data_gen.records import QARecord, write_parquet
    from dataclasses import fields
    names = {f.name for f in fields(QARecord)}
    write_parquet([QARecord(**{k: v for k, v in r.items() if k in names}) for r in open_recs],
                  qa_dir / "train" / "part-00000.parquet")
    report = teach(qa_dir, SAMPLE_CSV, tmp_path / "t", Teacher(generate_fn=fake_generate), batch_size=2, progress=False)
    reasons = {k: v["count"] for k, v in report["rejections"].items()}
    assert reasons.get("teacher_paraphrase: answer leak phrase") == 1
    assert reasons.get("teacher_free: empty question or answer") == 1  # unparseable output
    kept = read_records(tmp_path / "t")
    assert {r["question"] for r in kept} >= {"Which condition does this picture show?"}
    assert all("caption" not in r["question"].lower() for r in kept)


def test_leak_filter_unit():
    caption = "A 65-year-old farmer with red plaques treated with methotrexate."
    filt = LeakFilter([caption] + ["red plaques on the arm"] * 5)
    assert filt.check("What is seen?", "red plaques", caption, "visible features: red") == ""
    assert filt.check("What is seen?", "plaques in a farmer", caption, "") == "caption-only fact in answer"
    assert filt.check("How old?", "about 65", caption, "") == "caption-only number in answer"
    assert filt.check("Is this psoriasis?", "psoriasis", caption, "") == "answer inside the question"
