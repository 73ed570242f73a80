"""SLAKE and VQA-RAD files in their released schema: language and split selection, the trailing-space
answer type, integer answers, named choices and Chinese verdicts scored on what the reply commits to."""
import pytest

from dermvqa.eval.benchmarks.common import BenchError
from dermvqa.eval.loaders import load_bench
from dermvqa.eval.metrics import TextScorer
from tests.eval import official


@pytest.fixture(scope="module")
def scorer():
    return TextScorer()


def test_slake_official_test_file(tmp_path, scorer):
    path = official.slake(tmp_path)
    bench = load_bench(f"slake:{path}")                     # en by default
    assert len(bench.items) == 1061 and bench.skipped == {"q_lang zh (lang=en)": 1033}
    assert {it.split for it in bench.items} == {"test"} and {it.lang for it in bench.items} == {"en"}
    assert bench.items[0].images[0] == tmp_path / "imgs" / "xmlab0" / "source.jpg"
    assert bench.info["closed_without_named_choices"].startswith("177 ")   # "Which organ is abnormal?"
    by_q = {it.question: it for it in bench.items}
    biggest = by_q["Which is the biggest in this image, lung, liver or heart?"]
    assert biggest.options == ["lung", "liver", "heart"] and biggest.gold == "liver"
    assert scorer.score(biggest, "liver")[0]["accuracy"] == 1.0
    assert scorer.score(biggest, "lung, liver or heart")[0]["accuracy"] == 0.0     # repeating every choice
    assert scorer.score(biggest, "lung, liver or heart")[0]["llava_med_closed"] == 1.0
    abnormal = by_q["Which organ is abnormal?"]
    assert abnormal.options == [] and scorer.score(abnormal, "The answer is lung.")[0]["accuracy"] == 1.0
    assert scorer.score(abnormal, "Lung and heart")[0]["accuracy"] == 0.0

    zh = load_bench(f"slake:{path}:lang=zh")
    assert len(zh.items) == 1033 and zh.skipped == {"q_lang en (lang=zh)": 1061}
    polar = next(it for it in zh.items if it.gold == "没有")
    assert polar.options == ["有", "没有"] and scorer.score(polar, "图中没有肝脏")[0]["accuracy"] == 1.0
    assert scorer.score(polar, "图中有肝脏")[0]["accuracy"] == 0.0
    choice = next(it for it in zh.items if it.options == ["肺", "肝", "心脏"])
    assert scorer.score(choice, "肝")[0]["accuracy"] == 1.0 and scorer.score(choice, "肺、肝还是心脏")[0]["accuracy"] == 0
    both = load_bench(f"slake:{path}:lang=all")
    assert len(both.items) == 2094 and both.skipped == {}


def test_vqa_rad_official_file(tmp_path, scorer):
    path = official.vqa_rad(tmp_path)
    bench = load_bench(f"vqarad:{path}")
    assert len(bench.items) == 451 and bench.info["items_per_split"] == {"test": 451, "train": 1797}
    assert bench.items[0].images[0] == tmp_path / "VQA_RAD Image Folder" / "synpic0.jpg"
    everything = load_bench(f"vqarad:{path}:split=all")
    assert len(everything.items) == 2248
    trailing = next(it for it in everything.items if it.id == "2156")
    assert trailing.answer_type == "closed" and trailing.options == ["yes", "no"]
    count = next(it for it in bench.items if it.question.startswith("How many"))
    assert count.gold == "2" and scorer.score(count, "2")[0]["exact_match"] == 1.0
    side = next(it for it in bench.items if "left or right" in it.question)
    assert side.options == ["left", "right"] and scorer.score(side, "On the left.")[0]["accuracy"] == 1.0
    assert len(load_bench(f"vqarad:{path}:split=train").items) == 1797


def test_radiology_bad_entries(tmp_path):
    path = official.vqa_rad(tmp_path, n=6, n_test=3)
    text = path.read_text().replace('"phrase_type": "para"', '"phrase_type": "paraphrase"', 1)
    path.write_text(text)
    with pytest.raises(BenchError, match=r"entry 4 \(qid 4\): phrase_type 'paraphrase' is not one of"):
        load_bench(f"vqarad:{path}")
    with pytest.raises(BenchError, match=r"not a SLAKE JSON \(entry 0 has no img_name / q_lang\).*use --bench vqarad:"):
        load_bench(f"slake:{path}")
    slake = official.slake(tmp_path / "s", n_en=6, n_zh=0, n_images=1)
    slake.write_text(slake.read_text().replace('"answer_type": "OPEN"', '"answer_type": "FREE"'))
    with pytest.raises(BenchError, match=r"entry \d \(qid \d\): answer_type 'FREE' is neither OPEN nor CLOSED"):
        load_bench(f"slake:{slake}")


class Replies:
    """An answer log stand-in: the gold answer for even qids, a reply naming every choice for odd ones."""

    def __init__(self, items):
        self.items = {it.id: it for it in items}

    def get(self, item_id, blind):
        it = self.items[item_id]
        return {"reply": it.gold if int(item_id) % 2 == 0 else " or ".join(it.options) or "lung and heart"}


def test_metrics_json_counts_every_skip_and_reports_languages(tmp_path):
    from dermvqa.eval.runner import check_images
    from dermvqa.eval.summary import build_metrics

    path = official.slake(tmp_path, n_en=12, n_zh=8, n_images=96)
    for spec, skipped in ((f"slake:{path}", {"q_lang zh (lang=en)": 8}), (f"slake:{path}:lang=all", {})):
        bench = load_bench(spec)
        items, missing = check_images(bench.items)
        m = build_metrics(bench, items, missing, Replies(items), {}, blind=False, n_boot=50)
        assert m["benchmark"]["loader_skipped"] == skipped and m["benchmark"]["missing_images"]["count"] == 0
        closed = [it for it in items if it.answer_type == "closed"]
        assert m["overall"]["image"]["accuracy"]["value"] == pytest.approx(
            sum(int(it.id) % 2 == 0 for it in closed) / len(closed))
    assert set(m["strata"]["language"]) == {"en", "zh"}
    assert m["benchmark"]["loader"]["closed_without_named_choices"].startswith("2 ")
