"""Trust figures for a quickstart run: grounding scored on the synthetic world's lesion masks, the
out-of-distribution check against real HAM10000 photos, and what an explanation costs on the CPU.

    python -m dermvqa.bench.trust --run runs/quickstart --ham ../shared/data/ham10000/images \\
        --pad ../shared/data/pad-ufes-20/examples/PAT_8_15_820.png --out runs/trust

Grounding: every held-out test question is answered greedily and the answer grounded by each method.
Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop", without their
15-pixel tolerance): share of answers whose peak point (grounding.Explanation.peak_point) lies inside the
lesion mask, against a random point (the mean lesion-area share). Patch-level versions: the hottest patch
at least half covered by the mask ("strict"; on acne's spots and small naevi no patch is half covered, so
it is also given on the answers whose image has such a patch), or touched by it. Mean relevance (0..1 per
map) on lesion patches vs plain-skin patches. Each figure is also split by the image's diagnosis.
OOD: AUROC of the score, held-out synthetic test images (in) against the HAM10000 images (out), for each
pooling x method, each with its own threshold from held-out training images; the share of test answers
that would abstain; the PAD photo's score. Six overlays (3 right, 3 wrong diagnoses) are written to --out.
With --ham-run (a `dermvqa quickstart --dataset ham10000` folder) the HAM10000 model's shipped summary is
scored the other way round: its official test images (in) against the synthetic images (out) and the PAD photo;
and, with no lesion masks for HAM10000 here, where its diagnosis maps peak on every 7th test image (centre
quarter vs border, against their area shares) and its mean map.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_gen.records import read_records
from dermvqa.infer.generate import answer_batch, load_model
from dermvqa.infer.grounding import METHODS, explain, processor_view, write_explanation
from dermvqa.trust.features import POOLINGS, pooled_feature_sets
from dermvqa.trust.ood import fit, fit_split, load_summary, training_images


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an outside image > score of an inside one), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    r_out = ranks[len(inside):].sum()
    return float((r_out - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


@functools.lru_cache(maxsize=None)  # each image has several answers and methods: read each mask once per size
def mask_view(mask_path: Path, processor, side: int) -> np.ndarray:
    """The lesion mask as the model sees its image (grey 0..255, side x side)."""
    return np.asarray(processor_view(Image.open(mask_path).convert("RGB"), processor, side).convert("L"))


def coverage(mask_path: Path, processor, rows: int) -> np.ndarray:
    """Share of each patch (of what the model sees) covered by the lesion mask."""
    k = 16
    return (mask_view(mask_path, processor, rows * k).astype(float) / 255).reshape(rows, k, rows, k).mean((1, 3))


def point_hit(mask_path: Path, processor, point: tuple[float, float], side: int = 448) -> bool:
    view = mask_view(mask_path, processor, side)
    return bool(view[min(int(point[0] * side), side - 1), min(int(point[1] * side), side - 1)] > 127)


def same(a: str, b: str) -> bool:
    return a.strip().strip(".").lower() == b.strip().strip(".").lower()


def grounding(model, processor, world: Path, out: Path, limit: int | None, methods: list[str]) -> None:
    test = read_records(world / "qa", split="test")
    test = test[::max(1, len(test) // limit)][:limit] if limit else test
    images = {r["image"]: Image.open(world / "images" / r["image"]).convert("RGB") for r in test}
    answers = []
    for i in range(0, len(test), 32):
        chunk = test[i:i + 32]
        answers += answer_batch(model, processor, [images[r["image"]] for r in chunk], [r["question"] for r in chunk])
    print(f"\n== Grounding: {len(test)} held-out answers on {len(images)} images ==")
    rows = None
    diagnosis = {r["image"]: r["answer"] for r in test if r["family"] == "diagnosis"}
    for method in methods:
        stats = {"point": [], "hit": [], "hit_any": [], "attainable": [], "in": [], "out": [], "sec": [], "dx": []}
        for r, a in zip(test, answers):
            if not a.strip():
                continue
            e = explain(model, processor, images[r["image"]], r["question"], a, method)
            rows = e.grid.shape[0]
            cov = coverage(world / "masks" / r["image"], processor, rows)
            g, peak = e.normalised(), e.peak()
            stats["point"].append(point_hit(world / "masks" / r["image"], processor, e.peak_point()))
            stats["hit"].append(cov[peak] >= 0.5)
            stats["hit_any"].append(cov[peak] > 0)
            stats["attainable"].append(bool((cov >= 0.5).any()))
            stats["in"].append(g[cov >= 0.5].mean() if (cov >= 0.5).any() else np.nan)
            stats["out"].append(g[cov == 0].mean() if (cov == 0).any() else np.nan)
            stats["sec"].append(e.seconds)
            stats["dx"].append(diagnosis.get(r["image"], "?"))
        hit, attainable = np.array(stats["hit"]), np.array(stats["attainable"])
        print(f"{method:>10}: pointing game {np.mean(stats['point']):.3f} (peak point in lesion); hottest patch "
              f">= half lesion {hit.mean():.3f} ({hit[attainable].mean():.3f} on the {attainable.sum()} answers whose "
              f"image has such a patch), touches lesion {np.mean(stats['hit_any']):.3f}; mean relevance lesion "
              f"{np.nanmean(stats['in']):.3f} vs skin {np.nanmean(stats['out']):.3f}; "
              f"median {statistics.median(stats['sec']) * 1000:.0f} ms per map (n {len(hit)})")
        dx = np.array(stats["dx"])
        for name in sorted(set(dx)):
            pick = dx == name
            print(f"{'':>12}{name[:34]:<35} n {pick.sum():>3}: point {np.mean(np.array(stats['point'])[pick]):.3f}, "
                  f"patch >= half {hit[pick].mean():.3f}, touches {np.mean(np.array(stats['hit_any'])[pick]):.3f}")
    covs = [coverage(world / "masks" / name, processor, rows) for name in images]
    area = [np.asarray(Image.open(world / "masks" / name).convert("L"), dtype=float).mean() / 255 for name in images]
    print(f"{'random':>10}: point in lesion {np.mean(area):.3f}, patch >= half lesion {np.mean([(c >= 0.5).mean() for c in covs]):.3f}, patch touches "
          f"lesion {np.mean([(c > 0).mean() for c in covs]):.3f}")

    dx = [(r, a) for r, a in zip(test, answers) if r["family"] == "diagnosis" and a.strip()]
    picks = [p for p in dx if same(p[1], p[0]["answer"])][:3] + [p for p in dx if not same(p[1], p[0]["answer"])][:3]
    out.mkdir(parents=True, exist_ok=True)
    for r, a in picks:
        kind = "right" if same(a, r["answer"]) else "wrong"
        info = write_explanation(images[r["image"]], explain(model, processor, images[r["image"]], r["question"], a),
                                 processor, out / f"{kind}_{Path(r['image']).stem}")
        print(f"overlay ({kind}; gold {r['answer']!r}, model {a!r}): {info['png']}")

    photo, question = images[test[0]["image"]], "What is the most likely diagnosis for this lesion?"
    t_answer, t_explain = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        a = answer_batch(model, processor, [photo], [question])[0]
        t1 = time.perf_counter()
        explain(model, processor, photo, question, a)
        t_answer.append(t1 - t0)
        t_explain.append(time.perf_counter() - t1)
    print(f"one answer {statistics.median(t_answer) * 1000:.0f} ms; its explanation adds "
          f"{statistics.median(t_explain) * 1000:.0f} ms (median of 10, CPU, {torch.get_num_threads()} threads)")


def features(model, processor, paths: list[Path]) -> dict[str, torch.Tensor]:
    parts = [pooled_feature_sets(model, processor, [Image.open(p).convert("RGB") for p in paths[i:i + 256]])
             for i in range(0, len(paths), 256)]
    return {k: torch.cat([p[k] for p in parts]) for k in POOLINGS}


def ood(model, processor, run: Path, ham: Path, pad: Path, ham_limit: int | None) -> None:
    world, model_dir = run / "world", run / "train" / "model"
    train = training_images(read_records(world / "qa", split="train"))
    fit_names, held = fit_split(train)
    test = read_records(world / "qa", split="test")
    test_images = sorted({r["image"] for r in test})
    per_image = {n: sum(r["image"] == n for r in test) for n in test_images}
    ham_paths = sorted(ham.glob("*.jpg"))[:ham_limit]
    t0 = time.perf_counter()
    f_fit, f_held, f_test = (features(model, processor, [world / "images" / n for n in names])
                             for names in (fit_names, held, test_images))
    f_ham, f_pad = features(model, processor, ham_paths), features(model, processor, [pad])
    print(f"\n== OOD: {len(fit_names)} fit + {len(held)} held-out training images, {len(test_images)} test images "
          f"(in), {len(ham_paths)} HAM10000 (out); features in {time.perf_counter() - t0:.0f} s ==")
    weights = np.array([per_image[n] for n in test_images], dtype=float)

    def line(name, s_test, s_ham, s_pad, threshold):
        flagged = s_test > threshold
        print(f"{name:>36}: AUROC {auroc(s_test, s_ham):.4f}; test answers abstaining "
              f"{(weights * flagged).sum() / weights.sum():.3f}; HAM flagged {(s_ham > threshold).mean():.3f}; "
              f"PAD {s_pad[0]:.2f} vs threshold {threshold:.2f} ({'flagged' if s_pad[0] > threshold else 'MISSED'})")

    labels = [train[n] for n in fit_names]
    for pooling in POOLINGS:
        for method, lab in (("class Gaussian", labels), ("one Gaussian", ["all"] * len(labels))):
            s = fit(f_fit[pooling], lab, f_held[pooling])
            line(f"{pooling} / {method}", *(s.scores(f[pooling]).numpy() for f in (f_test, f_ham, f_pad)),
                 s.threshold)
        bank = torch.nn.functional.normalize(f_fit[pooling], dim=1)

        def knn(f):
            return (1 - torch.nn.functional.normalize(f[pooling], dim=1) @ bank.T).min(1).values.numpy()
        line(f"{pooling} / 1-NN cosine", knn(f_test), knn(f_ham), knn(f_pad), float(np.quantile(knn(f_held), 0.99)))
    shipped = load_summary(model_dir)
    if shipped is None:
        print(f"{model_dir} has no out-of-distribution summary: run dermvqa ood-fit")
        return
    pooling = shipped.meta["pooling"]
    line(f"shipped ({pooling}, q {shipped.meta['quantile']})",
         *(shipped.scores(f[pooling]).numpy() for f in (f_test, f_ham, f_pad)), shipped.threshold)


def ham_model(ham_run: Path, world: Path, ham: Path, pad: Path) -> None:
    import csv

    model_dir = ham_run / "train" / "model"
    model, processor = load_model(model_dir, device="cpu")
    shipped = load_summary(model_dir)
    split = csv.DictReader(open(ham.parent / "dermamnist_split.csv", encoding="utf-8"))
    test = [ham / f"{r['image_id']}.jpg" for r in split if r["split"] == "test"]
    question, points, maps = "What is the most likely diagnosis for this lesion?", [], []
    for path in test[::7]:
        photo = Image.open(path).convert("RGB")
        e = explain(model, processor, photo, question, answer_batch(model, processor, [photo], [question])[0])
        points.append(e.peak_point())
        maps.append(e.normalised())
    p = np.array(points)
    border = np.minimum(np.minimum(p[:, 0], 1 - p[:, 0]), np.minimum(p[:, 1], 1 - p[:, 1])) < 0.125
    centre = (np.abs(p - 0.5) < 0.25).all(1)
    print(f"\n== Grounding of the HAM10000 model, {len(p)} test images (no lesion masks) ==\npeak in the centre "
          f"quarter {centre.mean():.3f} (area 0.25); within 1/8 of the border {border.mean():.3f} (area 0.438)\n"
          f"mean map:\n{np.array2string(np.mean(maps, 0), precision=2)}")
    synthetic = sorted((world / "images").rglob("*.png"))
    s_test, s_syn, s_pad = (shipped.scores(features(model, processor, paths)[shipped.meta["pooling"]]).numpy()
                            for paths in (test, synthetic, [pad]))
    t = shipped.threshold
    print(f"\n== OOD of the HAM10000 model ({shipped.meta['pooling']}, threshold {t:.2f}) ==\n"
          f"HAM10000 test images abstaining {(s_test > t).mean():.3f} (n {len(s_test)}); synthetic images flagged "
          f"{(s_syn > t).mean():.3f} (n {len(s_syn)}); AUROC {auroc(s_test, s_syn):.4f}; "
          f"PAD {s_pad[0]:.2f} ({'flagged' if s_pad[0] > t else 'MISSED'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a dermvqa quickstart --out folder")
    ap.add_argument("--ham", type=Path, required=True, help="folder of HAM10000 .jpg images")
    ap.add_argument("--pad", type=Path, required=True, help="a PAD-UFES-20 photo")
    ap.add_argument("--out", type=Path, default=Path("runs/trust"), help="where the overlays go")
    ap.add_argument("--limit", type=int, default=None, help="ground only this many test answers (spread evenly)")
    ap.add_argument("--ham-limit", type=int, default=None, help="use only the first N HAM10000 images")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--skip", choices=["grounding", "ood"], default=None)
    ap.add_argument("--ham-run", type=Path, default=None, help="also score a HAM10000 quickstart's OOD summary")
    args = ap.parse_args()
    if args.ham_run:
        ham_model(args.ham_run, args.run / "world", args.ham, args.pad)
    model, processor = load_model(args.run / "train" / "model", device="cpu")
    if args.skip != "grounding":
        grounding(model, processor, args.run / "world", args.out, args.limit, args.methods.split(","))
    if args.skip != "ood":
        ood(model, processor, args.run, args.ham, args.pad, args.ham_limit)


if __name__ == "__main__":
    main()
