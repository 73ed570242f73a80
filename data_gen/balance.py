"""Corpus-wide choices that make closed questions impossible to answer without the image.

yes/no: every image is asked about its own diagnosis (yes) and about one other corpus diagnosis
(no). The negatives are a derangement of the diagnoses themselves, so within each split every
diagnosis is asked exactly as often with answer "yes" as with "no": the name in the question
carries no information. Negatives are matched among siblings first, then cousins, then further
out, and never with an ancestor or descendant (or a node the corpus files above the diagnosis).

multiple choice: the options are a run of neighbouring corpus diagnoses in ontology depth-first
order (siblings and cousins) containing the true one. Each diagnosis sits in every such run once,
so the option set does not reveal the answer, and the correct letter cycles over A-D per diagnosis.
"""
from __future__ import annotations

import random
from collections import defaultdict

from data_gen.corpus import Corpus
from data_gen.families.common import RowPlan
from data_gen.ontology import Path_
from data_gen.split import stable_int

Item = tuple[int, str, Path_]  # (row index, filename, diagnosis path)


def _match_groups(groups, rng, pairs):
    """Pair rows with slots from a different group; return the leftover (rows, slots) of one group."""
    groups = [g for g in groups if g[0]]
    if not groups:
        return [], []
    rng.shuffle(groups)
    for rows, slots in groups:
        rng.shuffle(rows)
        rng.shuffle(slots)
    n = sum(len(r) for r, _ in groups)
    m = max(len(r) for r, _ in groups)
    if 2 * m <= n:
        rows = [(g, x) for g, (r, _) in enumerate(groups) for x in r]
        slots = [(g, x) for g, (_, s) in enumerate(groups) for x in s]
        slots = slots[m:] + slots[:m]  # shifting by the largest group never pairs a group with itself
        for _ in range(3 * n):  # random valid swaps, so a diagnosis's negatives spread over all its peers
            i, j = rng.randrange(n), rng.randrange(n)
            if rows[i][0] != slots[j][0] and rows[j][0] != slots[i][0]:
                slots[i], slots[j] = slots[j], slots[i]
        pairs.extend((r[1], s[1]) for r, s in zip(rows, slots))
        return [], []
    dom = max(range(len(groups)), key=lambda i: len(groups[i][0]))
    d_rows, d_slots = groups[dom]
    o_rows = [x for i, (r, _) in enumerate(groups) if i != dom for x in r]
    o_slots = [x for i, (_, s) in enumerate(groups) if i != dom for x in s]
    k = n - m
    pairs.extend(zip(o_rows, d_slots[:k]))
    pairs.extend(zip(d_rows[:k], o_slots))
    return d_rows[k:], d_slots[k:]


def _derange(items: list[Item], corpus: Corpus, rng: random.Random):
    """Pairs (row item, negative path) over the effective-path trie, deepest level first."""
    pairs: list = []

    def solve(prefix: tuple, members: list[Item]):
        own = [it for it in members if corpus.effective(it[2]) == prefix]
        below = defaultdict(list)
        for it in members:
            eff = corpus.effective(it[2])
            if eff != prefix:
                below[eff[len(prefix)]].append(it)
        groups = [solve(prefix + (k,), below[k]) for k in sorted(below)]
        rows, slots = _match_groups(groups, rng, pairs)
        return rows + own, slots + [it[2] for it in own]

    by_top = defaultdict(list)
    for it in items:
        by_top[corpus.effective(it[2])[0]].append(it)
    rows, slots = _match_groups([solve((k,), by_top[k]) for k in sorted(by_top)], rng, pairs)
    return pairs, rows


def plan_yes_no(items: list[Item], corpus: Corpus, seed: int, split: str, plans: dict[int, RowPlan]) -> int:
    """Fill plan.yes / plan.negative for one split; return how many yes questions were dropped to
    keep every diagnosis exactly balanced."""
    rng = random.Random(stable_int("yes_no", seed, split))
    pairs, _unmatched = _derange(items, corpus, rng)
    for it in items:
        plans[it[0]].yes = True
    asked_no = defaultdict(int)
    for it, neg in pairs:
        if corpus.related(it[2], neg):  # only where the corpus hierarchy disagrees with the trie
            continue
        plans[it[0]].negative = neg
        asked_no[neg] += 1
    by_dx = defaultdict(list)
    for it in items:
        by_dx[it[2]].append(it)
    dropped = 0
    for dx, members in by_dx.items():
        extra = len(members) - asked_no[dx]
        # Drop yes questions of images that got no negative first, then by a fixed pseudo-random order.
        members.sort(key=lambda it: (plans[it[0]].negative is not None, stable_int("drop", seed, it[1])))
        for it in members[:extra]:
            plans[it[0]].yes = False
            dropped += 1
    return dropped


def _windows(dx: Path_, vocab: list[Path_], n: int, corpus: Corpus) -> list[list[Path_]]:
    """Runs of n neighbours (circular) holding dx and nothing related to it, by dx's letter 0..n-1."""
    pos, size, out = vocab.index(dx), len(vocab), []
    for letter in range(n):
        run = [vocab[(pos - letter + j) % size] for j in range(n)]
        if len(set(run)) == n and not any(o != dx and corpus.related(o, dx) for o in run):
            out.append(run)
    return out


def _nearest_unrelated(dx: Path_, vocab: list[Path_], n: int, corpus: Corpus) -> list[Path_]:
    onto = corpus.ontology
    pos = vocab.index(dx)
    others = [o for o in vocab if o != dx and not corpus.related(o, dx)]
    others.sort(key=lambda o: (-onto.shared_depth(o, dx), abs(vocab.index(o) - pos), onto.order[o]))
    return others[: n - 1]


def plan_multiple_choice(items: list[Item], corpus: Corpus, seed: int, plans: dict[int, RowPlan],
                         n_options: int = 4) -> None:
    vocab = corpus.diagnoses()
    n = min(n_options, len(vocab))
    if n < 2:
        return
    by_dx = defaultdict(list)
    for it in items:
        by_dx[it[2]].append(it)
    for dx, members in by_dx.items():
        runs = _windows(dx, vocab, n, corpus)
        members.sort(key=lambda it: stable_int("mc", seed, it[1]))
        for rank, it in enumerate(members):
            if runs:
                run = runs[rank % len(runs)]
            else:
                wrong = _nearest_unrelated(dx, vocab, n, corpus)
                if not wrong:
                    continue
                letter = rank % (len(wrong) + 1)
                run = wrong[:letter] + [dx] + wrong[letter:]
            plans[it[0]].mc_options = run
            plans[it[0]].mc_index = run.index(dx)
