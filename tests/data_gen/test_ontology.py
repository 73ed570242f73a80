import json

import pytest

from data_gen.ontology import Ontology
from tests.conftest import ONTOLOGY
from tests.data_gen.conftest import TREE, real_rows


@pytest.fixture(scope="module")
def onto():
    return Ontology.load(ONTOLOGY, TREE)


@pytest.fixture(scope="module")
def flat_only():
    return Ontology.load(ONTOLOGY)


def test_shape_matches_the_release(onto, flat_only):
    flat = json.loads(ONTOLOGY.read_text())
    assert len(flat) - 1 == 369
    # with the nested tree the shared melanocytic keys split: benign and malignant hold disjoint children
    benign = {p[-1] for p in onto.children[("proliferations", "benign", "melanocytic")]}
    malignant = {p[-1] for p in onto.children[("proliferations", "malignant", "melanocytic")]}
    assert "Melanocytic nevus" in benign and "Malignant melanoma, melanoma" in malignant
    assert not benign & malignant
    # the flat file alone keeps both copies, so such a leaf has two candidate paths
    assert len(flat_only.candidates("Melanocytic nevus")) == 2


def test_comma_names_are_matched_whole(onto):
    res = onto.resolve("Malignant melanoma, melanoma",
                       "proliferations, malignant, melanocytic, Malignant melanoma, melanoma")
    assert res.paths == (("proliferations", "malignant", "melanocytic", "Malignant melanoma, melanoma"),)
    assert onto.resolve("melanoma").paths == res.paths  # a synonym part finds the node
    assert onto.resolve("Lichen simplex chronicus").paths[0][-1] == "Lichen simplex chronicus, "
    ulcer = onto.resolve("ulcer", "reaction patterns and descriptive terms, ulcers, erosion of skin, ulcer")
    assert ulcer.paths[0][-2] == "Ulcers, Erosion of skin" and "ulcers, erosion of skin" in ulcer.hier_nodes


def test_comma_joined_label_with_two_diagnoses(onto):
    res = onto.resolve("candidiasis, tinea", "inflammatory, infectious, fungal, candidiasis, tinea")
    assert [p[-1] for p in res.paths] == ["Candidiasis", "Tinea"] and not res.problem


def test_benign_malignant_from_hierarchical_label(flat_only):
    nevus = flat_only.resolve("Melanocytic nevus", "proliferations, benign, melanocytic, Melanocytic nevus")
    assert nevus.paths[0][1] == "benign"
    melanoma = flat_only.resolve("melanoma", "proliferations, malignant, melanocytic, melanoma")
    assert melanoma.paths[0][1] == "malignant"
    unsure = flat_only.resolve("Melanocytic nevus", "")
    assert unsure.paths == () and unsure.problem == "ambiguous benign/malignant label"


def test_unknown_label_is_reported(onto):
    res = onto.resolve("dragon scale disease, psoriasis", "")
    assert res.paths == () and res.problem == "label not in ontology" and "dragon scale disease" in res.detail


def test_every_real_label_resolves(onto):
    for row in real_rows():
        label = row["disease_label"]
        if label != "no definitive diagnosis":
            res = onto.resolve(label, row["hierarchical_disease_label"])
            assert res.paths and not res.problem, (label, res)


def test_relatives_and_groups(onto):
    bcc = onto.candidates("Basal cell carcinoma")[0]
    scc = onto.candidates("Squamous cell carcinoma")[0]
    nevus = onto.candidates("Melanocytic nevus")[0]
    assert onto.shared_depth(bcc, scc) == 3 and onto.shared_depth(bcc, nevus) == 1
    assert onto.related(bcc[:2], bcc) and not onto.related(bcc, scc)
    assert onto.is_grouping(("inflammatory", "infectious", "viral")) and not onto.is_grouping(bcc)
    assert onto.depth(bcc) == 4 and onto.is_leaf(bcc)
    assert scc in onto.siblings(bcc) and bcc not in onto.siblings(bcc)
    assert onto.ancestors(bcc) == [("proliferations",), ("proliferations", "malignant"),
                                   ("proliferations", "malignant", "non-melanocytic")]
    cousins = onto.cousins(bcc)
    assert ("proliferations", "malignant", "melanocytic", "Malignant melanoma, melanoma") in cousins
    assert not any(c[:3] == bcc[:3] for c in cousins)
