"""The order training sees the records in, as row positions over the memory-mapped record table.

Phases run one after another; each repeats its families' records `epochs` times, shuffled per
epoch with Python's `random.Random(seed)` (the permutation a list of records had, so a seed gives
the same order it always gave). A phase with `class_balance: b` > 0 draws its epoch (as many records,
with replacement) with weight n^-b, n the records of the same family and the same diagnosis (ontology
path) in the phase: 1 is class-balanced within each family, 0 as found (Cui et al., CVPR 2019, on
re-weighting by class frequency). With `group` > 0 each epoch is cut into mega-batches of
50 x `group` records dealt into batches of similar length that keep the family mix (`_grouped`).
"""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_gen.records import Records

LONGEST = (1 << 20) - 1  # lengths are clipped here to fit the sort key


def family_mask(records: Records, families) -> np.ndarray:
    if families == "all":
        return np.ones(len(records), dtype=bool)
    return pc.is_in(records.column("family"), pa.array(list(families))).to_numpy(zero_copy_only=False)


def text_lengths(records: Records) -> np.ndarray:
    """UTF-8 bytes of every question and answer of each record, follow-up turns included: read off the mapped
    columns' offsets, no text touched."""
    table = records.dataset.data.table
    size = sum(pc.binary_length(table.column(name)).to_numpy() for name in ("question", "answer"))
    if "follow_ups" in table.column_names:
        turns = table.column("follow_ups").combine_chunks()
        flat = pc.list_flatten(turns)
        if len(flat):
            per_turn = sum(pc.fill_null(pc.binary_length(flat.field(name)), 0).to_numpy(zero_copy_only=False)
                           for name in ("question", "answer"))
            size = size + np.bincount(pc.list_parent_indices(turns).to_numpy(), per_turn, len(table)).astype(size.dtype)
    return size[records.rows]


def family_codes(records: Records) -> np.ndarray:
    """A small integer per record naming its family (codes in order of first appearance in the table)."""
    return pc.dictionary_encode(records.dataset.data.table.column("family")).combine_chunks().indices.to_numpy(
        zero_copy_only=False)[records.rows]


def curriculum_order(records: Records, phases: list[dict], seed: int, group: int = 0) -> np.ndarray:
    """Positions into `records`, phase after phase, epoch after epoch."""
    rng = random.Random(seed)
    lengths = text_lengths(records) if group else None
    families = family_codes(records) if group else None
    parts = []
    for i, phase in enumerate(phases):
        fams = phase.get("families", "all")
        subset = np.flatnonzero(family_mask(records, fams)).tolist()
        if not subset:
            raise ValueError(f"curriculum phase {i} selects no records (families={fams})")
        balance = float(phase.get("class_balance", 0.0))
        weights = class_weights(records, np.asarray(subset), balance) if balance else None
        for epoch_index in range(int(phase["epochs"])):
            if weights is None:
                rng.shuffle(subset)
                epoch = np.asarray(subset, dtype=np.int64)
            else:
                draw = np.random.default_rng([seed, i, epoch_index])
                epoch = np.asarray(subset, dtype=np.int64)[draw.choice(len(subset), len(subset), p=weights)]
            if not group:
                parts.append(epoch)
                continue
            parts.append(_grouped(epoch, lengths, families, group))
    return np.concatenate(parts)


def class_weights(records: Records, subset: np.ndarray, balance: float) -> np.ndarray:
    """Sampling probabilities over `subset`: n^-balance per record, n = its (family, ontology path) count."""
    table = records.take(subset)
    keys = [f"{f}\0{'/'.join(p)}" for f, p in zip(table.column("family").to_pylist(),
                                                   table.column("ontology_path").to_pylist())]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** -balance
    return w / w.sum()


def _grouped(epoch: np.ndarray, lengths: np.ndarray, families: np.ndarray, group: int) -> np.ndarray:
    """The epoch in mega-batches of 50 x `group`, each dealt into batches of `group` similar-length records
    that keep the mega-batch's family mix.

    Sorting a mega-batch by length alone makes steps single-family (families differ in length);
    instead each family is sorted longest first and cut into equal slices, batch b taking slice b of
    every family. Vectorised over the whole epoch: sort keys, not Python loops over mega-batches.
    """
    mega = 50 * group
    chunk = np.arange(len(epoch)) // mega
    fam, length = families[epoch], np.minimum(lengths[epoch], LONGEST)
    n_fam = int(families.max()) + 1
    # within each (mega-batch, family): longest first, ties in epoch order (a stable sort of one int64 key)
    by_family = np.argsort(((chunk * n_fam + fam) << 20) + (LONGEST - length), kind="stable")
    run = (chunk * n_fam + fam)[by_family]
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    sizes = np.diff(np.r_[starts, len(run)])
    rank = np.arange(len(run)) - np.repeat(starts, sizes)  # position within its (mega-batch, family) run
    c = chunk[by_family]
    n_batches = -(-np.minimum(mega, len(epoch) - c * mega) // group)
    batch = rank * n_batches // np.repeat(sizes, sizes)
    final = np.argsort((((c * 50 * group + batch) * n_fam + fam[by_family]) << 20) + rank, kind="stable")
    return epoch[by_family][final]


def label_vocabulary(records: Records) -> dict:
    """What the model was trained to name: diagnoses with their ontology paths, and concepts."""
    family = records.column("family")
    dx = records.take(pc.equal(family, "diagnosis").to_numpy(zero_copy_only=False))
    paths = dict(zip(dx.column("label").to_pylist(), dx.column("ontology_path").to_pylist()))
    morph = records.take(pc.equal(family, "morphology").to_numpy(zero_copy_only=False))
    concepts = pc.unique(pc.list_flatten(morph.column("options"))).to_pylist() if len(morph) else []
    return {"diagnoses": sorted(paths), "ontology_paths": paths, "concepts": sorted(concepts)}


def label_rows(records: Records, family: str | None = None) -> list[dict]:
    """(family, image, label) of the records, or of one family's, read as three columns: the small dicts
    stage-0 tower pretraining and the out-of-distribution fit need, not whole rows."""
    if family is not None:
        records = records.take(pc.equal(records.column("family"), family).to_numpy(zero_copy_only=False))
    columns = [records.column(name).to_pylist() for name in ("family", "image", "label")]
    return [{"family": f, "image": i, "label": lab} for f, i, lab in zip(*columns)]
