"""Manifest statistics: studies per split and view, report lengths, label frequencies.

`compute_stats` returns a plain dict (also written as JSON), `format_stats` the text table the CLI
prints, `plot_stats` a PNG with one panel per statistic (matplotlib, Agg backend: no display).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from radgen.data.study import SPLITS, VIEWS, Study
from radgen.labels.observations import CHEXPERT_14

LENGTH_BINS = (0, 1, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200)  # words; last bin is open-ended


def _length_histogram(lengths: Sequence[int]) -> dict[str, int]:
    histogram: dict[str, int] = {}
    edges = list(LENGTH_BINS)
    for low, high in zip(edges, edges[1:] + [None]):
        label = f"{low}+" if high is None else (f"{low}" if high - low == 1 else f"{low}-{high - 1}")
        histogram[label] = sum(1 for n in lengths if n >= low and (high is None or n < high))
    return histogram


def _percentile(values: Sequence[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def compute_stats(studies: Sequence[Study]) -> dict[str, Any]:
    splits = Counter(study.split or "none" for study in studies)
    views: dict[str, Counter] = {}
    missing_views: Counter = Counter()
    for study in studies:
        views.setdefault(study.split or "none", Counter()).update(ref.view for ref in study.images)
        missing_views.update(str(ref.get("view", "UNKNOWN")) for ref in study.meta.get("missing_images", []) if isinstance(ref, dict))
    lengths = {name: [len(study.report(name).split()) for study in studies] for name in ("findings", "impression")}
    chexpert = Counter()
    mesh = Counter()
    labelled = 0
    for study in studies:
        labels = study.labels or {}
        if "chexpert" in labels:
            labelled += 1
            chexpert.update(name for name, value in labels["chexpert"].items() if value == 1)
        mesh.update(term.split("/")[0].strip().lower() for term in labels.get("mesh", []) if term.strip())
    return {
        "studies": len(studies),
        "splits": {name: splits[name] for name in (*SPLITS, "none") if splits[name]},
        "images": sum(len(study.images) for study in studies),
        "text_only_studies": sum(1 for study in studies if not study.images),
        "views": {split: {view: counter[view] for view in VIEWS if counter[view]} for split, counter in sorted(views.items())},
        # Views of images the manifest lists but whose files were missing at prepare time.
        "missing_image_views": {view: missing_views[view] for view in VIEWS if missing_views[view]},
        "report_words": {
            name: {
                "empty": sum(1 for n in values if n == 0),
                "mean": round(sum(values) / len(values), 2) if values else 0.0,
                "median": _percentile(values, 0.5),
                "p95": _percentile(values, 0.95),
                "max": max(values, default=0),
                "histogram": _length_histogram(values),
            }
            for name, values in lengths.items()
        },
        "chexpert_labelled_studies": labelled,
        "chexpert_positive": {name: chexpert[name] for name in CHEXPERT_14 if chexpert[name]},
        "mesh_top": dict(mesh.most_common(20)),
    }


def format_stats(stats: dict[str, Any], title: str = "") -> str:
    lines = [f"# {title}" if title else "# manifest statistics"]
    lines.append(f"studies: {stats['studies']}  images: {stats['images']}  text-only studies: {stats['text_only_studies']}")
    lines.append("split: " + ", ".join(f"{name} {count}" for name, count in stats["splits"].items()))
    for split, counts in stats["views"].items():
        if counts:
            lines.append(f"views ({split}): " + ", ".join(f"{view} {count}" for view, count in counts.items()))
    if stats["missing_image_views"]:
        lines.append("views of missing image files: " + ", ".join(f"{view} {count}" for view, count in stats["missing_image_views"].items()))
    for name, info in stats["report_words"].items():
        lines.append(
            f"{name} words: empty {info['empty']}, mean {info['mean']}, median {info['median']:g}, p95 {info['p95']:g}, max {info['max']}"
        )
        lines.append("  histogram: " + ", ".join(f"{label}: {count}" for label, count in info["histogram"].items()))
    if stats["chexpert_labelled_studies"]:
        lines.append(f"CheXpert labels (from MeSH) on {stats['chexpert_labelled_studies']} studies, positives:")
        lines.extend(f"  {name}: {count}" for name, count in stats["chexpert_positive"].items())
    if stats["mesh_top"]:
        lines.append("top MeSH headings: " + ", ".join(f"{name} {count}" for name, count in stats["mesh_top"].items()))
    return "\n".join(lines) + "\n"


def plot_stats(stats: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Four panels (splits, views, report length histogram, label frequencies) written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radgen.io import atomic_write_bytes

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    splits = stats["splits"]
    axes[0, 0].bar(list(splits), list(splits.values()), color="tab:blue")
    axes[0, 0].set_title("studies per split")
    view_totals = Counter()
    for counts in stats["views"].values():
        view_totals.update(counts)
    names = sorted(set(view_totals) | set(stats["missing_image_views"]))
    axes[0, 1].bar(names, [view_totals[name] for name in names], color="tab:green", label="on disk")
    axes[0, 1].bar(names, [stats["missing_image_views"].get(name, 0) for name in names], bottom=[view_totals[name] for name in names],
                   color="lightgray", label="file missing")
    if names:
        axes[0, 1].legend()
    axes[0, 1].set_title("images per view")
    for name, color in (("findings", "tab:orange"), ("impression", "tab:purple")):
        histogram = stats["report_words"][name]["histogram"]
        axes[1, 0].plot(list(histogram), list(histogram.values()), marker="o", color=color, label=name)
    axes[1, 0].set_title("report length (words)")
    axes[1, 0].tick_params(axis="x", rotation=45)
    axes[1, 0].legend()
    labels = stats["chexpert_positive"] or stats["mesh_top"]
    axes[1, 1].barh(list(labels)[::-1] or ["(no labels)"], list(labels.values())[::-1] or [0], color="tab:red")
    axes[1, 1].set_title("CheXpert positives (from MeSH)" if stats["chexpert_positive"] else "MeSH headings")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
