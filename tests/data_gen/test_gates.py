from data_gen import gates
from data_gen.derm1m import Row
from data_gen.gates import Rejections


def row(caption, concepts=(), **kw):
    return Row(index=0, filename="x.jpg", caption=caption, source="youtube", source_type="edu", disease_label="",
               hierarchical_label="", concepts=list(concepts), **kw)


def test_row_gate_rejects_what_the_image_cannot_support():
    assert gates.row_gate(row("This image shows a person discussing laser treatment."), True)[0] == \
        "caption says the image is not a skin photo"
    assert gates.row_gate(row("Atrophy of the gluteal muscles in the same horse."), True)[1] == "horse"
    assert gates.row_gate(row("H&E stained section showing acanthosis."), True)[0].startswith("caption says")
    assert gates.row_gate(row("Front view."), False)[0].startswith("nothing the image can support")
    about = gates.row_gate(row("This image discusses eczema, a common condition."), True)
    assert about[0].startswith("caption is about")
    assert gates.row_gate(row("This image discusses eczema.", concepts=["red"]), True) == ("", "")
    assert gates.row_gate(row("Red scaly plaques on the elbow."), True) == ("", "")
    assert gates.row_gate(row(""), True)[0].startswith("empty caption")


def test_answer_leaks_and_answer_in_question():
    assert gates.leak("According to the caption, this is psoriasis.") in ("according to", "caption")
    assert gates.leak("The lesion looks like psoriasis. Answer: yes.") == ""
    assert gates.answer_in_question("Is this psoriasis or eczema? Name it.", "psoriasis")
    assert not gates.answer_in_question("What is the diagnosis?", "psoriasis")
    assert not gates.answer_in_question("Is this guttate psoriasis-like?", "psoria")


def test_caption_only_words():
    caption = "A 65-year-old farmer with red plaques, treated with methotrexate for two years."
    allowed = {"the", "lesion", "looks", "like", "red", "plaques"}
    assert gates.caption_only_words("The lesion looks like red plaques.", caption, allowed) == []
    assert gates.caption_only_words("Red plaques in a farmer treated with methotrexate.", caption, allowed) == \
        ["farmer", "methotrexate", "treated"]


def test_rejections_keep_counts_and_first_examples():
    r = Rejections(examples=2)
    for i in range(5):
        r.add("dup", f"row {i}")
    r.add("leak", "row 9")
    d = r.as_dict()
    assert d["dup"] == {"count": 5, "examples": ["row 0", "row 1"]} and list(d) == ["dup", "leak"]
    other = Rejections()
    other.merge(d)
    assert other.as_dict()["dup"]["count"] == 5
