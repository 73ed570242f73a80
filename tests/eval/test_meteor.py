"""METEOR through TextScorer equals values worked out by hand, with WordNet read offline (no skip: without
WordNet these tests fail, since `meteor` is then missing from the scores).

nltk's METEOR, defaults alpha 0.9, beta 3, gamma 0.5, on dermvqa's tokens (lowercased, articles dropped):
  matches m: unigrams aligned in three stages, exact, then Porter stem, then WordNet synonym (nltk looks up
  synonyms of the stemmed leftovers, so the synonym pairs below use words Porter leaves unchanged);
  P = m / hypothesis length, R = m / reference length, Fmean = P R / (alpha P + (1 - alpha) R);
  chunks: fewest runs of matches adjacent in both hypothesis and reference;
  penalty = gamma (chunks / m) ** beta; METEOR = Fmean (1 - penalty); the best of several references.
"""
import pytest

from dermvqa.eval.metrics import TextScorer, meteor_status

ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5


def by_hand(matches: int, hyp_len: int, ref_len: int, chunks: int) -> float:
    p, r = matches / hyp_len, matches / ref_len
    fmean = p * r / (ALPHA * p + (1 - ALPHA) * r)
    return fmean * (1 - GAMMA * (chunks / matches) ** BETA)


@pytest.fixture(scope="module")
def scorer():
    return TextScorer()


def meteor(scorer, pred, refs):
    return scorer.open_scores(pred, refs, gold="")["meteor"]


def test_wordnet_is_found_offline():
    assert meteor_status() is None


def test_exact_matches_out_of_order(scorer):
    # hyp [scaly red plaque on elbow], ref [red scaly plaque on elbow]: 5 exact matches, aligned
    # (0,1) (1,0) (2,2) (3,3) (4,4): chunks {scaly}, {red}, {plaque on elbow} = 3; P = R = 1
    assert meteor(scorer, "scaly red plaque on elbow", ["red scaly plaque on the elbow"]) == pytest.approx(
        by_hand(5, 5, 5, 3))
    assert by_hand(5, 5, 5, 3) == pytest.approx(1 - 0.5 * 0.6 ** 3)


def test_precision_and_recall_weighted_by_alpha(scorer):
    # hyp [red scaly plaque], ref [red plaque on elbow]: red, plaque exact; scaly (stem scali) matches nothing;
    # P = 2/3, R = 2/4, Fmean = (1/3) / (0.6 + 0.05); chunks {red}, {plaque} = 2, penalty 0.5 * 1
    assert meteor(scorer, "red scaly plaque", ["red plaque on the elbow"]) == pytest.approx(
        (1 / 3) / 0.65 * 0.5)


def test_stem_stage(scorer):
    # scaling / scaled -> scale, plaques / plaque -> plaqu: 2 stem matches in one chunk, penalty 0.5 * (1/2)^3
    assert meteor(scorer, "scaling plaques", ["scaled plaque"]) == pytest.approx(by_hand(2, 2, 2, 1))
    assert by_hand(2, 2, 2, 1) == pytest.approx(0.9375)


def test_only_a_wordnet_synonym_matches(scorer):
    # sick and ill share WordNet synset ill.s.01 and no exact or stem match: m = 1, P = R = 1, chunks 1,
    # penalty 0.5; without WordNet there would be no match at all
    assert meteor(scorer, "sick", ["ill"]) == pytest.approx(0.5)
    # patient exact, sick ~ ill by synonym, looks / is unmatched: m = 2 of 3 each side, chunks 2
    assert meteor(scorer, "the patient looks sick", ["the patient is ill"]) == pytest.approx(
        by_hand(2, 3, 3, 2))
    assert meteor(scorer, "sick", ["healthy"]) == 0.0


def test_best_reference_counts(scorer):
    assert meteor(scorer, "sick", ["healthy", "ill"]) == pytest.approx(0.5)
