"""The order training sees the records in, as row positions over the memory-mapped record table.

Phases run one after another; each repeats its families' records `epochs` times, shuffled per
epoch with Python's `random.Random(seed)` (the permutation a list of records had, so a seed gives
the same order it always gave). With `group` > 0 each epoch is cut into mega-batches of
50 x `group` records dealt into batches of similar length that keep the family mix (`_grouped`).
"""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_gen.records import Records


def family_mask(records: Records, families) -> np.ndarray:
    if families == "all":
        return np.ones(len(records), dtype=bool)
    return pc.is_in(records.column("family"), pa.array(list(families))).to_numpy(zero_copy_only=False)


def text_lengths(records: Records) -> np.ndarray:
    """Characters of question + answer per record, from the columns (no Python strings made)."""
    return (pc.utf8_length(records.column("question")).to_numpy(zero_copy_only=False)
            + pc.utf8_length(records.column("answer")).to_numpy(zero_copy_only=False))


def curriculum_order(records: Records, phases: list[dict], seed: int, group: int = 0) -> np.ndarray:
    """Positions into `records`, phase after phase, epoch after epoch."""
    rng = random.Random(seed)
    lengths = text_lengths(records) if group else None
    families = pc.dictionary_encode(records.column("family")).indices.to_numpy(zero_copy_only=False) if group else None
    parts = []
    for i, phase in enumerate(phases):
        fams = phase.get("families", "all")
        subset = np.flatnonzero(family_mask(records, fams)).tolist()
        if not subset:
            raise ValueError(f"curriculum phase {i} selects no records (families={fams})")
        for _ in range(int(phase["epochs"])):
            rng.shuffle(subset)
            epoch = np.asarray(subset, dtype=np.int64)
            if not group:
                parts.append(epoch)
                continue
            for start in range(0, len(epoch), 50 * group):
                parts.append(_grouped(epoch[start:start + 50 * group], lengths, families, group))
    return np.concatenate(parts)


def _grouped(chunk: np.ndarray, lengths: np.ndarray, families: np.ndarray, group: int) -> np.ndarray:
    """A mega-batch as batches of `group` similar-length records that keep the mega-batch's family mix.

    Sorting the whole mega-batch by length would make steps single-family (families differ in
    length); instead each family is sorted longest first and dealt out in equal slices, batch b
    taking slice b of every family.
    """
    n_batches = -(-len(chunk) // group)
    slices = [np.array_split(members[np.argsort(-lengths[members], kind="stable")], n_batches)
              for members in (chunk[families[chunk] == f] for f in np.unique(families[chunk]))]
    return np.concatenate([family_slices[b] for b in range(n_batches) for family_slices in slices])


def label_vocabulary(records: Records) -> dict:
    """What the model was trained to name: diagnoses with their ontology paths, and concepts."""
    family = records.column("family")
    dx = records.take(pc.equal(family, "diagnosis").to_numpy(zero_copy_only=False))
    paths = dict(zip(dx.column("label").to_pylist(), dx.column("ontology_path").to_pylist()))
    morph = records.take(pc.equal(family, "morphology").to_numpy(zero_copy_only=False))
    concepts = pc.unique(pc.list_flatten(morph.column("options"))).to_pylist() if len(morph) else []
    return {"diagnoses": sorted(paths), "ontology_paths": paths, "concepts": sorted(concepts)}


def diagnosis_rows(records: Records) -> list[dict]:
    """(image, label) of the diagnosis records, as the small dicts stage-0 tower pretraining reads."""
    dx = records.take(pc.equal(records.column("family"), "diagnosis").to_numpy(zero_copy_only=False))
    return [{"family": "diagnosis", "image": i, "label": lab}
            for i, lab in zip(dx.column("image").to_pylist(), dx.column("label").to_pylist())]
