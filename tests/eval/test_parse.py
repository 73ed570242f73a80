import pytest

from dermvqa.eval.parse import (answer_text, choice_verdict, choices_in_question, exact_answer, format_options, normalize,
                                option_labels, parse_choice, parse_yes_no, polarity, tokens)

OPTIONS = ["eczema", "psoriasis", "melanoma", "nevus"]


@pytest.mark.parametrize("reply, expected", [
    ("B", 1), ("(B) psoriasis", 1), ("The answer is psoriasis.", 1), ("B. psoriasis", 1), ("(B)", 1),
    ("B) psoriasis", 1), ("Answer: C", 2), ("The answer is D.", 3), ("Option A", 0), ("psoriasis", 1),
    ("PSORIASIS!", 1), ("It looks like melanoma to me.", 2), ("A lesion of psoriasis", 1),
    ("I cannot tell", None), ("", None), ("E", None),
    # naming several options is no commitment, whatever comes first
    ("eczema, not psoriasis", None), ("eczema, psoriasis, melanoma or nevus", None),
    ("Could be eczema or psoriasis. Answer: psoriasis", 1),
])
def test_multiple_choice_replies(reply, expected):
    assert parse_choice(reply, OPTIONS) == expected


@pytest.mark.parametrize("reply, expected", [
    ("Yes, it is", "yes"), ("yes", "yes"), ("No.", "no"),
    ("The lesion looks like eczema, not psoriasis. Answer: no.", "no"),
    ("No doubt it looks like psoriasis. Answer: yes.", "yes"),   # the tagged verdict beats an earlier "no"
    ("It is not psoriasis", None), ("Nothing to see", None),
])
def test_yes_no_replies(reply, expected):
    assert parse_yes_no(reply) == expected
    assert parse_choice(reply, ["yes", "no"]) == (None if expected is None else ["yes", "no"].index(expected))


@pytest.mark.parametrize("reply, options, expected", [
    ("是的", ["是", "否"], 0), ("不是", ["是", "否"], 1), ("否", ["是", "否"], 1),
    ("这不是CT图像", ["是的", "不是"], 1),            # 不是 wins over the 是 inside it
    ("是的，这是CT", ["是的", "不是"], 0),
    ("没有", ["有", "没有"], 1), ("图中有肝脏", ["有", "没有"], 0), ("答案：没有", ["有", "没有"], 1),
    ("看不清楚", ["有", "没有"], None), ("肝脏", ["有", "没有"], None),
])
def test_chinese_verdicts_in_unspaced_sentences(reply, options, expected):
    assert parse_choice(reply, options) == expected


def test_polarity_of_options():
    assert [polarity(o) for o in ("Yes", "no.", "是的", "不是", "有", "没有", "liver")] == \
        ["yes", "no", "yes", "no", "yes", "no", None]


def test_longest_option_wins_at_same_position():
    opts = ["melanoma", "superficial spreading melanoma"]
    assert parse_choice("superficial spreading melanoma", opts) == 1
    assert parse_choice("This is superficial spreading melanoma.", opts) == 1
    assert parse_choice("melanoma", opts) == 0
    assert parse_choice("melanoma, maybe superficial spreading melanoma", opts) is None


def test_numbered_options_beyond_26():
    opts = [f"condition {i}" for i in range(30)]
    assert option_labels(30)[:3] == ["1", "2", "3"]
    assert parse_choice("(12)", opts) == 11
    assert parse_choice("3. condition 2", opts) == 2
    assert format_options(["a", "b"]) == "A. a B. b"


def test_normalize_tokens_and_exact_answer():
    assert normalize("  The Basal-cell   carcinoma! ") == "basal cell carcinoma"
    assert tokens("肝脏 is big, 是的!") == ["肝", "脏", "is", "big", "是", "的"]
    assert normalize("肝脏。") == normalize("肝 脏") == "肝 脏"
    assert answer_text("Hmm. Answer: T2.") == "T2." and answer_text("T2") == "T2"
    assert exact_answer("The answer is T2.", "T2") and exact_answer("Right lung", "right lung")
    assert not exact_answer("T2 weighted", "T2") and not exact_answer("anything", "")


@pytest.mark.parametrize("question, gold, expected", [
    ("Which is the biggest in this image, lung, liver or heart?", "Liver", ["lung", "liver", "heart"]),
    ("Is this an MRI or a CT scan?", "MRI", ["MRI", "a CT scan"]),
    ("Is the mass on the left or right?", "Left", ["left", "right"]),
    ("Is this a T1 weighted or T2 weighted MRI?", "T2", ["T1", "T2"]),
    ("Where is the abnormality, left lung or right lung?", "Right Lung", ["left lung", "right lung"]),
    ("哪个最大，肺、肝还是心脏？", "肝", ["肺", "肝", "心脏"]),
    ("这是CT还是MRI?", "MRI", ["CT", "MRI"]),
    ("Is this normal?", "Yes", []),                                  # no choices named
    ("Is it lung or heart?", "liver", []),                          # the gold is not among them
])
def test_choices_named_in_the_question(question, gold, expected):
    assert choices_in_question(question, gold) == expected


# Replies whose committed answer is invalid, each scored by hand under the stated rule; the old parser rescued all
# of them but the several-options and empty ones from the text before the tag (or a letter elsewhere in the reply).
@pytest.mark.parametrize("reply, options, verdict", [
    ("The lesion shows eczema, crust. Answer: crust.", OPTIONS, (None, "not_an_option")),
    ("It could be melanoma. Answer: I am not sure.", OPTIONS, (None, "not_an_option")),
    ("Psoriasis is likely. Answer:", OPTIONS, (None, "empty")),
    ("Option A is out. Answer: none of these", OPTIONS, (None, "not_an_option")),
    ("Answer: eczema or psoriasis", OPTIONS, (None, "several_options")),
    ("(A) is unlikely. **Answer:** crust", OPTIONS, (None, "not_an_option")),
    ("Yes, it resembles psoriasis. Answer: maybe.", ["yes", "no"], (None, "no_verdict")),
    ("No doubt. Answer: psoriasis", ["yes", "no"], (None, "no_verdict")),
    ("是的，看起来像。答案：不确定", ["是", "否"], (None, "no_verdict")),
    ("The lung is big. Answer: kidney", ["lung", "liver", "heart"], (None, "not_an_option")),
    ("", OPTIONS, (None, "empty")),
    # valid commitments stay right whatever the preamble says
    ("Eczema is ruled out. Answer: B", OPTIONS, (1, None)),
    ("The lesion shows eczema, crust. Answer: eczema.", OPTIONS, (0, None)),
    ("Not melanoma. **Answer:** \\boxed{D}", OPTIONS, (3, None)),
    ("It is not psoriasis. Answer: no.", ["yes", "no"], (1, None)),
    ("肝脏很大。答案：没有", ["有", "没有"], (1, None)),
])
def test_an_invalid_commitment_is_never_rescued(reply, options, verdict):
    assert choice_verdict(reply, options) == verdict
    assert parse_choice(reply, options) == verdict[0]


def test_yes_no_reads_only_the_committed_answer():
    assert parse_yes_no("Yes, it resembles psoriasis. Answer: maybe.") is None
    assert parse_yes_no("No doubt it looks like psoriasis. Answer: yes.") == "yes"
    assert parse_yes_no("No, it is not.") == "no"
