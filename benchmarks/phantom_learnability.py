"""Is IU-Phantom learnable but not trivial? Small CNN vs. global image statistics, AUROC per label.

    PYTHONPATH=. python benchmarks/phantom_learnability.py [--size 128] [--epochs 10] [--limit N] [--json out.json] [--cache imgs.npy]

Renders every IU X-Ray study (labels from the real MeSH terms; split 80/10/10 by uid, see
phantom_common.py) at --size px, trains a small CNN (torch, CPU) on the PA + lateral views of the
train split to predict the CheXpert-14 labels mapped from MeSH plus a few frequent MeSH headings,
and reports test-split AUROC per label (rank formula, radgen.data.phantom.learnability.rank_auroc).
The baseline fits a logistic regression on global statistics of both views (mean, std,
percentiles, 16-bin histogram): if the answer could be read from such statistics it would score
as well as the CNN. Labels with fewer than --min-positives test positives are reported as n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.phantom_common import DEFAULT_CSV, iu_studies  # noqa: E402
from radgen.data.phantom.learnability import SmallCNN, fit_logistic_regression, global_statistics, rank_auroc  # noqa: E402
from radgen.data.phantom.render import render_terms  # noqa: E402
from radgen.labels.mesh import mesh_to_chexpert, parse_mesh_field  # noqa: E402
from radgen.labels.observations import CHEXPERT_14  # noqa: E402

# Frequent MeSH headings with no (or a coarse) CheXpert counterpart; a study is positive if any
# of its terms has one of these headings (and the qualifier, when one is given).
HEADINGS = {
    "MeSH: Calcified Granuloma": (("calcified granuloma", None),),
    "MeSH: Scoliosis": (("scoliosis", None),),
    "MeSH: Lung/hyperdistention": (("lung", "hyperdistention"),),
    "MeSH: Lung/hypoinflation": (("lung", "hypoinflation"),),
    "MeSH: Aorta tortuous": (("aorta", "tortuous"), ("aorta, thoracic", "tortuous")),
    "MeSH: Degenerative spine": (("thoracic vertebrae", "degenerative"), ("spine", "degenerative"), ("osteophyte", None), ("spondylosis", None)),
    "MeSH: Catheters, Indwelling": (("catheters, indwelling", None),),
    "MeSH: Surgical Instruments": (("surgical instruments", None),),
    "MeSH: Calcinosis": (("calcinosis", None),),
    "MeSH: Diaphragm/elevated": (("diaphragm", "elevated"),),
}


def label_vector(mesh: list[str]) -> np.ndarray:
    chexpert = mesh_to_chexpert(mesh)
    terms = parse_mesh_field(mesh)
    values = [float(chexpert.get(name, 0) == 1) for name in CHEXPERT_14]
    for rules in HEADINGS.values():
        hit = any(t.heading.lower() == h and (q is None or t.has(q)) for t in terms for h, q in rules)
        values.append(float(hit))
    return np.asarray(values, dtype=np.float32)


def _render(job):
    mesh, study_id, size = job
    rendering = render_terms(mesh, study_id, seed=0, size=size)
    return np.stack([rendering.images["PA"], rendering.images["LATERAL"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=16, help="CNN base width")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--cache", type=Path, default=None, help="save/load the rendered arrays here (.npy)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N studies (by uid)")
    parser.add_argument("--min-positives", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    studies = [s for s in iu_studies(args.csv) if s.split in ("train", "test")][: args.limit]
    start = time.perf_counter()
    jobs = [(s.labels["mesh"], s.study_id, args.size) for s in studies]
    if args.cache and args.cache.exists():
        images = np.load(args.cache)
        assert images.shape[0] == len(studies) and images.shape[-1] == args.size, f"{args.cache} is for another --limit/--size"
    else:
        with get_context("fork").Pool(args.workers) as pool:
            images = np.stack(pool.map(_render, jobs, chunksize=16))
        if args.cache:
            np.save(args.cache, images)
    render_s = time.perf_counter() - start
    print(f"rendered {len(studies)} studies in {render_s:.0f} s", file=sys.stderr, flush=True)
    labels = np.stack([label_vector(s.labels["mesh"]) for s in studies])
    names = list(CHEXPERT_14) + list(HEADINGS)
    train = np.array([s.split == "train" for s in studies])
    test = ~train

    # Baseline: global statistics of both views → logistic regression.
    stats = np.stack([np.concatenate([global_statistics(im[0]), global_statistics(im[1])]) for im in images])
    keep = labels[train].sum(0) > 0
    predict = fit_logistic_regression(stats[train], labels[train][:, keep])
    baseline = np.full((test.sum(), len(names)), 0.5, np.float32)
    baseline[:, keep] = predict(stats[test])

    # Small CNN on the stacked views.
    x = torch.as_tensor(images, dtype=torch.float32).div_(255.0).sub_(0.5).div_(0.25)
    y = torch.as_tensor(labels)
    model = SmallCNN(in_channels=2, num_labels=len(names), width=args.width)
    positives = y[train].sum(0)
    pos_weight = ((len(y[train]) - positives) / positives.clamp(min=1)).clamp(max=20.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    train_idx = torch.nonzero(torch.as_tensor(train)).squeeze(1)
    steps = args.epochs * ((len(train_idx) + 31) // 32)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        total = 0.0
        for batch in order.split(32):
            xb = x[batch]
            if torch.rand(1, generator=generator).item() < 0.5:  # small shifts: positions vary anyway
                xb = torch.roll(xb, shifts=(int(torch.randint(-4, 5, (1,), generator=generator)), int(torch.randint(-4, 5, (1,), generator=generator))), dims=(2, 3))
            loss = loss_fn(model(xb), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / len(train_idx):.4f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        cnn = torch.sigmoid(torch.cat([model(chunk) for chunk in x[torch.as_tensor(test)].split(128)])).numpy()

    rows = []
    y_test = labels[test]
    for j, name in enumerate(names):
        n_pos = int(y_test[:, j].sum())
        ok = n_pos >= args.min_positives and n_pos < len(y_test)
        rows.append({
            "label": name, "test_pos": n_pos, "train_pos": int(labels[train][:, j].sum()),
            "cnn_auroc": rank_auroc(cnn[:, j], y_test[:, j]) if ok else None,
            "stats_auroc": rank_auroc(baseline[:, j], y_test[:, j]) if ok else None,
        })
    scored = [r for r in rows if r["cnn_auroc"] is not None]
    summary = {
        "studies": len(studies), "train": int(train.sum()), "test": int(test.sum()), "size": args.size, "epochs": args.epochs,
        "width": args.width, "threads": args.threads, "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "render_s": round(render_s, 1), "train_s": round(train_s, 1),
        "mean_cnn_auroc": float(np.mean([r["cnn_auroc"] for r in scored])),
        "mean_stats_auroc": float(np.mean([r["stats_auroc"] for r in scored])),
    }
    print("| label | train pos | test pos | CNN AUROC | statistics AUROC |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {r['label']} | {r['train_pos']} | {r['test_pos']} | {fmt(r['cnn_auroc'])} | {fmt(r['stats_auroc'])} |")
    print(f"| **mean over scored labels** | | | **{summary['mean_cnn_auroc']:.3f}** | **{summary['mean_stats_auroc']:.3f}** |")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
