"""Per-item scores (closed accuracy, unparsed, open exact match, token recall/F1, BLEU-1..4, ROUGE-L, METEOR) and ECE.

All scores are fractions in [0, 1]; group figures are means of the per-item scores, so every number
can carry a bootstrap interval. A closed reply that commits to none of the listed options (or to several)
scores accuracy 0 and `unparsed` 1, whatever backend wrote it; its mean is the unparsed share, never
replaced by a guessed option. BLEU is sentence-level (sacrebleu, exponential smoothing, lowercased;
sacrebleu's `zh` tokenizer when the text has Chinese). Token metrics and ROUGE-L count each Chinese
character as a token, so unspaced Chinese is scored too.
"""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from dermvqa.eval.items import CLOSED, EvalItem
from dermvqa.eval.parse import exact_answer, has_cjk, normalize, parse_choice, tokens

CLOSED_METRICS = ["accuracy", "llava_med_closed", "unparsed"]
OPEN_METRICS = ["exact_match", "token_recall", "token_f1", "llava_med_open_recall",
                "bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "meteor"]
BERTSCORE_REASON = "bert-score needs a pretrained model from the hub; none is available offline"


def token_recall_f1(pred: str, ref: str) -> tuple[float, float]:
    """Multiset overlap of normalised tokens: recall of the reference tokens and F1."""
    p, r = tokens(pred), tokens(ref)
    common = sum((Counter(p) & Counter(r)).values())
    if not r or not p or not common:
        return 0.0, 0.0
    recall, precision = common / len(r), common / len(p)
    return recall, 2 * precision * recall / (precision + recall)


def llava_med_open_recall(pred: str, ref: str) -> float:
    """LLaVA-Med's open-question score: share of distinct reference words that appear in the reply."""
    ref_words, pred_words = set(tokens(ref)), set(tokens(pred))
    return len(ref_words & pred_words) / len(ref_words) if ref_words else 0.0


def meteor_status() -> str | None:
    """None when nltk's METEOR can run; otherwise the reason it cannot (it needs WordNet 3.0, which
    scripts/install.sh copies from Debian's wordnet-base into <sys.prefix>/nltk_data, where nltk looks)."""
    try:
        from nltk.corpus import wordnet
        wordnet.ensure_loaded()
    except ImportError:
        return "nltk is not installed (pip install 'dermvqa[eval]')"
    except (LookupError, OSError) as e:
        problem = "finds no WordNet" if isinstance(e, LookupError) else f"finds an incomplete WordNet ({e})"
        return (f"nltk {problem}: run scripts/install.sh as root (it installs Debian's wordnet-base and lays it "
                f"out in {sys.prefix}/nltk_data/corpora/wordnet)")
    return None


class _RougeTokens:
    """rouge-score's tokenizer interface over `tokens` (its own drops every non-ASCII character)."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return tokens(text)


class TextScorer:
    """Holds the metric objects so they are built once per run."""

    def __init__(self):
        from rouge_score import rouge_scorer
        from sacrebleu.metrics import BLEU

        self.bleu = {(n, tok): BLEU(max_ngram_order=n, effective_order=True, lowercase=True, tokenize=tok)
                     for n in range(1, 5) for tok in ("13a", "zh")}
        self.rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokens())
        self.meteor_missing = meteor_status()

    def open_scores(self, pred: str, refs: list[str], gold: str) -> dict[str, float]:
        golds = {normalize(x) for x in [gold, *refs] if x}
        recall, f1 = max(token_recall_f1(pred, r) for r in refs)
        s = {"exact_match": float(normalize(pred) in golds), "token_recall": recall, "token_f1": f1,
             "llava_med_open_recall": max(llava_med_open_recall(pred, r) for r in refs)}
        tok = "zh" if any(has_cjk(t) for t in [pred, *refs]) else "13a"
        for n in range(1, 5):
            s[f"bleu{n}"] = self.bleu[n, tok].sentence_score(pred, refs).score / 100 if pred.strip() else 0.0
        s["rougeL"] = self.rouge.score_multi(refs, pred)["rougeL"].fmeasure
        if self.meteor_missing is None:
            from nltk.translate.meteor_score import meteor_score
            s["meteor"] = meteor_score([tokens(r) for r in refs], tokens(pred))
        return s

    def score(self, item: EvalItem, reply: str) -> tuple[dict[str, float], int | None]:
        """(scores, picked option index or None) for one reply."""
        if item.answer_type == CLOSED:
            scores = {"llava_med_closed": float(item.gold.lower() in reply.lower())}
            if item.options:
                pick = parse_choice(reply, item.options)
                scores.update(accuracy=float(pick == item.answer_index), unparsed=float(pick is None))
            else:
                pick, scores["accuracy"] = None, float(exact_answer(reply, item.gold))
            return dict(sorted(scores.items())), pick
        return self.open_scores(reply, item.references, item.gold), None


def calibration(confidence: list[float], correct: list[float], n_bins: int = 10) -> dict:
    """Expected calibration error over equal-width confidence bins, with the per-bin table."""
    conf, corr = np.asarray(confidence, float), np.asarray(correct, float)
    if conf.size == 0:
        raise ValueError("calibration needs at least one confident prediction")
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        if not m.any():
            continue
        acc, c = float(corr[m].mean()), float(conf[m].mean())
        ece += m.sum() / conf.size * abs(acc - c)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int(m.sum()), "accuracy": acc, "confidence": c})
    return {"ece": float(ece), "n": int(conf.size), "bins": bins}
