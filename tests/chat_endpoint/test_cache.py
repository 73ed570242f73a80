"""The one reply cache: keys as eval and the teacher computed them before they shared it, caches both wrote
then still read (the teacher's own table moved into the shared one), a file that is no cache one clear error."""
import sqlite3

import pytest

from chat_endpoint.cache import ReplyCache, cache_key
from chat_endpoint.protocol import Reply


def test_keys_are_the_ones_eval_and_the_teacher_wrote_before():
    settings = {"temperature": 0, "max_tokens": 64, "format": "f"}
    assert cache_key("http://h/v1", "m", "Is this psoriasis?", "ab" * 32, settings) == \
        "04aa852525d4cc6a0e14054d926acfe8e63afc31f69538db5167cf8c152eb1fe"
    body = {"model": "teacher-x", "max_tokens": 768, "temperature": 0.2}
    assert cache_key("a/b.jpg", "conversation-v1", "teacher-x", body) == \
        "0bdff8d626ad46d020acda70485cfe91d9b9871fb2104bbfa5e29f997c93a539"


def test_answers_and_failures_round_trip(tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite", "answers")
    reply = Reply("yes", "looked first", "stop", "", "served-1", 12, 3)
    cache.put("k", "m", "Is it?", "sha", reply)
    cache.put_failure("k2", "m", "Is it?", "sha", "error_http", 500, "HTTP 500: boom", 3)
    cache.close()
    again = ReplyCache(tmp_path / "c.sqlite", "answers")
    assert again.get("k") == reply and again.get("k2") is None
    again.close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("SELECT key, reason, status, tries FROM answers_failures").fetchall() == [
        ("k2", "error_http", 500, 3)]


def test_a_teacher_cache_from_before_is_moved_into_the_shared_table(tmp_path):
    path = tmp_path / "cache.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, image TEXT, model TEXT, prompt_version TEXT, text TEXT, "
               "prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
    db.executemany("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [("k1", "a/1.jpg", "teacher-x", "conversation-v1", '{"conversation": []}', 100, 40, 1.0),
                    ("k2", "a/2.jpg", "teacher-x", "conversation-v1", "", 100, 0, 2.0)])
    db.commit()
    db.close()
    cache = ReplyCache(path, "answers")
    assert cache.get("k1") == Reply('{"conversation": []}', "", None, "", "", 100, 40)
    assert cache.get("k2").content == ""  # kept as it was; the client asks an empty reply again
    cache.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT model, prompt, created FROM answers ORDER BY key").fetchall() == [
        ("teacher-x", "conversation-v1: a/1.jpg", 1.0), ("teacher-x", "conversation-v1: a/2.jpg", 2.0)]
    assert [r[1] for r in db.execute("PRAGMA table_info(answers)")][-1] == "detail"


def test_an_eval_cache_from_before_replies_kept_their_reasoning_is_still_read(tmp_path):
    db = sqlite3.connect(tmp_path / "cache.sqlite")
    db.execute("CREATE TABLE verdicts (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, image_sha256 TEXT, reply TEXT, "
               "served_model TEXT, created REAL)")
    db.execute("INSERT INTO verdicts VALUES ('k', 'judge', 'p', '', 'VERDICT: CORRECT', 'judge-1', 1.0)")
    db.commit()
    db.close()
    cache = ReplyCache(tmp_path / "cache.sqlite", "verdicts")
    assert cache.get("k") == Reply("VERDICT: CORRECT", "", None, "", "judge-1")
    cache.close()


def test_a_file_that_is_no_cache_is_one_clear_error(tmp_path):
    (tmp_path / "cache.sqlite").write_text("not a database, just text " * 200)
    with pytest.raises(ValueError, match=r"cache.sqlite: not a reply cache .*move it aside or use another --out"):
        ReplyCache(tmp_path / "cache.sqlite", "answers")
    with pytest.raises(ValueError, match="cache table must be one of"):
        ReplyCache(tmp_path / "other.sqlite", "answers; DROP TABLE x")


def test_the_package_stands_beneath_data_gen_and_dermvqa():
    from tests.test_import_graph import imports

    upward = [(m, t) for m, edges in imports().items() if m.startswith("chat_endpoint") for t, _ in edges
              if t.split(".")[0] in ("data_gen", "dermvqa")]
    assert upward == []
