"""Length grouping sees whole conversations: follow-up turns count toward a record's length."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_gen.records import QARecord, open_records, write_parquet
from dermvqa.train.curriculum import curriculum_order, text_lengths


def test_text_lengths_count_every_turn_in_utf8_bytes(tmp_path):
    records = [QARecord(id="0", image="a.png", question="q?", answer="ab", family="diagnosis", answer_type="open"),
               QARecord(id="1", image="b.png", question="é", answer="x", family="multi_turn", answer_type="open",
                        follow_ups=[{"question": "why?", "answer": "scale"}, {"question": "ü", "answer": "yes"}]),
               QARecord(id="2", image="c.png", question="q", answer="a", family="diagnosis", answer_type="open")]
    write_parquet(records, tmp_path / "qa.parquet")
    recs = open_records(tmp_path / "qa.parquet")
    assert text_lengths(recs).tolist() == [4, 2 + 1 + 4 + 5 + 2 + 3, 2]
    assert text_lengths(recs.take([2, 1])).tolist() == [2, 17]  # a view keeps its own rows, in its order


def test_parquet_without_follow_ups_reads_first_turns(tmp_path):
    table = pa.table({"id": ["0", "1"], "image": ["a", "b"], "question": ["qq", "q"], "answer": ["a", "aaa"],
                      "family": ["diagnosis"] * 2, "split": ["train"] * 2})
    pq.write_table(table, tmp_path / "old.parquet")
    assert text_lengths(open_records(tmp_path / "old.parquet")).tolist() == [3, 4]


def test_grouping_puts_long_conversations_together(tmp_path):
    long_turns = [{"question": "and the border?", "answer": "irregular " * 20}] * 3
    records = [QARecord(id=str(i), image=f"{i}.png", question="q", answer="a", family="diagnosis",
                        answer_type="open", follow_ups=long_turns if i % 2 else []) for i in range(64)]
    write_parquet(records, tmp_path / "qa.parquet")
    recs = open_records(tmp_path / "qa.parquet")
    order = curriculum_order(recs, [{"families": "all", "epochs": 1}], seed=0, group=8)
    is_long = np.array([bool(recs[int(i)]["follow_ups"]) for i in order]).reshape(-1, 8)
    assert sorted(is_long.all(1).tolist() + (~is_long).all(1).tolist()).count(True) == 8  # no batch mixes them


def _imbalanced(tmp_path):
    """Diagnosis records 90 nevus : 10 melanoma, and 20 yes/no records all of nevus."""
    nevus, melanoma = ["melanocytic", "nevus"], ["melanocytic", "melanoma"]
    records = [QARecord(id=str(i), image=f"{i}.png", question="q", answer="a", family="diagnosis", answer_type="open",
                        ontology_path=nevus if i < 90 else melanoma) for i in range(100)]
    records += [QARecord(id=f"y{i}", image=f"{i}.png", question="q", answer="yes", family="yes_no",
                         answer_type="open", ontology_path=nevus) for i in range(20)]
    write_parquet(records, tmp_path / "qa.parquet")
    return open_records(tmp_path / "qa.parquet")


def test_class_balance_draws_each_diagnosis_equally_within_its_family(tmp_path):
    recs = _imbalanced(tmp_path)
    order = curriculum_order(recs, [{"families": "all", "epochs": 40, "class_balance": 1.0}], seed=0)
    assert len(order) == 40 * 120  # the same budget: an epoch is as long as its records
    rows = recs.take(order)
    fam, path = rows.column("family").to_pylist(), [p[-1] for p in rows.column("ontology_path").to_pylist()]
    dx = [p for f, p in zip(fam, path) if f == "diagnosis"]
    # weights 1/90 per nevus record and 1/10 per melanoma record: the two classes and the yes/no family share equally
    assert abs(dx.count("melanoma") / len(dx) - 0.5) < 0.03
    assert abs(fam.count("yes_no") / len(fam) - 1 / 3) < 0.03


def test_class_balance_half_and_zero(tmp_path):
    recs = _imbalanced(tmp_path)
    plain = curriculum_order(recs, [{"families": "all", "epochs": 2}], seed=3)
    assert (curriculum_order(recs, [{"families": "all", "epochs": 2, "class_balance": 0.0}], seed=3) == plain).all()
    assert sorted(plain[:120].tolist()) == list(range(120))  # as found: every record once per epoch
    half = recs.take(curriculum_order(recs, [{"families": ["diagnosis"], "epochs": 60, "class_balance": 0.5}], seed=0))
    share = [p[-1] for p in half.column("ontology_path").to_pylist()].count("melanoma") / len(half.rows)
    assert abs(share - 10 ** 0.5 / (10 ** 0.5 + 90 ** 0.5)) < 0.03  # n^-0.5 per record: 10*10^-.5 vs 90*90^-.5
