"""Multi-turn records (`follow_ups`) become one training conversation; parquet without the column still reads."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from transformers import AutoProcessor

from data_gen.records import SCHEMA, QARecord, read_records, write_parquet
from dermvqa.data.conversation import IGNORE_INDEX, record_messages
from dermvqa.data.dataset import QADataset

TURNS = [{"question": "What colour is it?", "answer": "red"}, {"question": "Is it raised?", "answer": "yes, raised"}]


def record(**kw):
    return QARecord(**{"id": "r1", "image": "a.png", "question": "What is the most likely diagnosis?",
                       "answer": "psoriasis", "family": "teacher_conversation", "answer_type": "open", **kw})


def test_follow_ups_round_trip_and_old_parquet_reads(tmp_path):
    write_parquet([record(follow_ups=TURNS), record()], tmp_path / "new" / "p.parquet")
    new = read_records(tmp_path / "new")
    assert new[0]["follow_ups"] == TURNS and new[1]["follow_ups"] == []
    old_schema = pa.schema([f for f in SCHEMA if f.name != "follow_ups"])
    old = {k: [v] for k, v in new[1].items() if k != "follow_ups"}
    (tmp_path / "old").mkdir()
    pq.write_table(pa.Table.from_pydict(old, schema=old_schema), tmp_path / "old" / "p.parquet")
    (rec,) = read_records(tmp_path / "old")
    assert "follow_ups" not in rec and len(record_messages(rec)) == 2


def test_every_answer_of_a_conversation_is_labelled_and_the_image_comes_once(tiny_model_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    Image.new("RGB", (32, 32), (200, 80, 80)).save(tmp_path / "a.png")
    write_parquet([record(follow_ups=TURNS)], tmp_path / "qa" / "p.parquet")
    (rec,) = read_records(tmp_path / "qa")
    messages = record_messages(rec)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert sum(part.get("type") == "image" for m in messages if m["role"] == "user" for part in m["content"]) == 1
    item = QADataset([rec], tmp_path, processor, max_length=2048)[0]
    ids, labels = item["input_ids"], item["labels"]
    labelled = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert labelled == "psoriasis<|im_end|>\nred<|im_end|>\nyes, raised<|im_end|>\n"
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    one_turn = QADataset([{**rec, "follow_ups": []}], tmp_path, processor, max_length=2048)[0]["input_ids"]
    assert ids.count(image_id) == one_turn.count(image_id) > 0  # the image once, as in a one-turn record
    with pytest.raises(KeyError):
        record_messages({"question": "q", "answer": "a", "follow_ups": [{"question": "only a question"}]})


def test_llava_export_keeps_the_follow_ups(tmp_path):
    from data_gen.export_llava import export

    write_parquet([record(follow_ups=TURNS)], tmp_path / "qa" / "p.parquet")
    assert export(tmp_path / "qa", tmp_path / "x.json") == 1
    (conv,) = json.loads((tmp_path / "x.json").read_text())
    assert [t["value"] for t in conv["conversations"]] == [
        "<image>\nWhat is the most likely diagnosis?", "psoriasis", "What colour is it?", "red", "Is it raised?",
        "yes, raised"]


def test_training_reader_sees_the_follow_ups(tmp_path):
    from data_gen.records import open_records

    write_parquet([record()], tmp_path / "qa" / "synth" / "p.parquet")
    write_parquet([record(id="r2", follow_ups=TURNS)], tmp_path / "qa" / "teacher" / "p.parquet")
    records = open_records(tmp_path / "qa", split="train")
    assert [len(record_messages(r)) for r in records] == [2, 6]
