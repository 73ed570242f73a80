import pytest

from dermvqa.eval.parse import format_options, mentions, normalize, option_labels, parse_choice, parse_yes_no

OPTIONS = ["eczema", "psoriasis", "melanoma", "nevus"]


@pytest.mark.parametrize("reply, expected", [
    ("B", 1), ("(B) psoriasis", 1), ("The answer is psoriasis.", 1), ("B. psoriasis", 1), ("(B)", 1),
    ("B) psoriasis", 1), ("Answer: C", 2), ("The answer is D.", 3), ("Option A", 0), ("psoriasis", 1),
    ("PSORIASIS!", 1), ("It looks like melanoma to me.", 2), ("A lesion of psoriasis", 1),
    ("eczema, not psoriasis", 0), ("I cannot tell", None), ("", None), ("E", None),
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


def test_longest_option_wins_at_same_position():
    opts = ["melanoma", "superficial spreading melanoma"]
    assert parse_choice("superficial spreading melanoma", opts) == 1
    assert parse_choice("This is superficial spreading melanoma.", opts) == 1
    assert parse_choice("melanoma", opts) == 0


def test_numbered_options_beyond_26():
    opts = [f"condition {i}" for i in range(30)]
    assert option_labels(30)[:3] == ["1", "2", "3"]
    assert parse_choice("(12)", opts) == 11
    assert parse_choice("3. condition 2", opts) == 2
    assert format_options(["a", "b"]) == "A. a B. b"


def test_normalize_and_mentions():
    assert normalize("  The Basal-cell   carcinoma! ") == "basal cell carcinoma"
    assert mentions("It is a basal cell carcinoma.", "Basal cell carcinoma")
    assert not mentions("carcinomas", "carcinoma")
