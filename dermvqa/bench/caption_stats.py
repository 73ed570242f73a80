"""What the caption family keeps of real Derm1M captions: sentence counts by reason, an audit, samples to read.

Runs `data synth --families caption` on a Derm1M CSV (default: the 100 real rows in ../shared/data)
and prints kept/dropped sentences with reasons, the same judgement on `caption` and on
`truncated_caption` (which of the two is cleaner), an audit of the kept sentences with a pattern
written apart from data_gen/sentences.py (age, duration, treatment, numbers: the goal is 0 hits),
and N sampled answers beside their source captions.
Usage: python -m dermvqa.bench.caption_stats [--csv CSV --ontology JSON] [--samples 15] [--seed 0]
"""
from __future__ import annotations

import argparse
import csv
import random
import re
import tempfile
from collections import Counter
from pathlib import Path

from dermvqa.bench.data_gen import SAMPLE, TERMS, TREE  # the paths of the real samples

# What no kept sentence may state: age, duration or history, treatment, a number.
AUDIT = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twenty|hundred)\b"
                   r"|\b(years?|months?|weeks?|days?|hours?|old|aged?|ago|since|history|duration|chronic|recurr\w*"
                   r"|infant|child\w*|boy|girl|adult|elderly|male|female|treat\w*|therap\w*|medic\w*|cream|ointment"
                   r"|\w*steroid\w*|antibiotic\w*|antifungal\w*|antihistamin\w*|surg\w*|excis\w*|biops\w*|laser"
                   r"|inject\w*|dose|mg|prescri\w*)\b", re.IGNORECASE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=SAMPLE / "Derm1M_v2_pretrain_ontology_sampled_100.csv")
    ap.add_argument("--ontology", type=Path, default=SAMPLE / "ontology.json")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from data_gen.families.caption import judge, ontology_names
    from data_gen.ontology import Ontology
    from data_gen.records import read_records
    from data_gen.sentences import split
    from data_gen.synth import synthesize

    out = Path(tempfile.mkdtemp(prefix="caption_stats_"))
    report = synthesize(args.csv, args.ontology, out, families=["caption"], tree_path=TREE, concept_terms_path=TERMS,
                        progress=False)
    records = read_records(out / "qa")
    tallies = report["tallies"]
    print(f"rows read {report['rows']['read']}, accepted by the row gates {report['rows']['accepted']}, "
          f"with a caption record {len(records)}")
    print(f"sentences of accepted rows: kept {tallies.get('caption sentences: kept', 0)}, "
          f"dropped {tallies.get('caption sentences: dropped', 0)}")
    for reason, info in report["rejections"].items():
        if reason.startswith("caption"):
            print(f"  {info['count']:4d}  {reason}")

    names = ontology_names(Ontology.load(args.ontology))
    with open(args.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print("\nall rows, each column judged on its own (row gates not applied):")
    for column in ("caption", "truncated_caption"):
        c = Counter(why or "kept" for r in rows for _, why in judge(r[column], names))
        print(f"  {column}: {sum(c.values())} sentences, kept {c['kept']}, dropped {sum(c.values()) - c['kept']}; "
              + ", ".join(f"{k} {v}" for k, v in c.most_common() if k != "kept"))
    print(f"  rows where the two columns differ: {sum(r['caption'] != r['truncated_caption'] for r in rows)}")

    kept = [s for r in records for s in split(r["answer"])]
    hits = [(s, AUDIT.search(s).group(0)) for s in kept if AUDIT.search(s)]
    print(f"\naudit: {len(hits)} of {len(kept)} kept sentences state age, duration, treatment or a number")
    for s, word in hits:
        print(f"  [{word}] {s}")

    source = {r["filename"]: r["caption"] for r in rows}
    print(f"\n{args.samples} sampled caption-family answers (seed {args.seed}):")
    for k, r in enumerate(random.Random(args.seed).sample(records, min(args.samples, len(records))), 1):
        print(f"\n{k}. {r['image']}\n   caption: {source[r['image']]}\n   answer:  {r['answer']}")


if __name__ == "__main__":
    main()
