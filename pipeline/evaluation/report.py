"""The evaluation report: a ranking table in markdown and a labelled gallery per test pair."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.core.atomic import atomic_path

ARROWS = {"higher": "↑", "lower": "↓"}


def rank_methods(
    means: Mapping[str, Mapping[str, float]], direction: Mapping[str, str]
) -> dict[str, float]:
    """Mean rank of each method over the metrics (1 = best; ties share the average rank;
    a metric that is NaN for any method is left out)."""
    methods = list(means)
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for metric, how in direction.items():
        values = [means[m].get(metric, math.nan) for m in methods]
        if any(v is None or math.isnan(v) for v in values):
            continue
        signed = np.asarray(values) * (-1.0 if how == "higher" else 1.0)
        for method, value in zip(methods, signed, strict=True):
            ranks[method].append(1.0 + np.sum(signed < value) + 0.5 * (np.sum(signed == value) - 1))
    return {m: float(np.mean(r)) if r else math.nan for m, r in ranks.items()}


def _best(values: Sequence[float], how: str) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if how == "higher" else min(finite)


def _format(value: float, digits: int) -> str:
    """Fixed decimals, or scientific where that would hide the value (tiny or huge)."""
    if value != 0 and not 10 ** -(digits - 1) <= abs(value) < 10**digits:
        return f"{value:.{digits - 2}e}"
    return f"{value:.{digits}f}"


def ranking_table(
    means: Mapping[str, Mapping[str, float]], direction: Mapping[str, str], digits: int = 4
) -> str:
    """Markdown table: methods (best mean rank first) x metrics with their direction arrows,
    the best value of each metric in bold, and a mean-rank column."""
    metrics = list(direction)
    ranks = rank_methods(means, direction)
    order = sorted(means, key=lambda m: (math.isnan(ranks[m]), ranks[m], m))
    best = {k: _best([means[m].get(k, math.nan) for m in order], direction[k]) for k in metrics}
    best_rank = _best([ranks[m] for m in order], "lower")
    header = ["Method", *(f"{k} {ARROWS[direction[k]]}" for k in metrics), "mean rank ↓"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in order:
        cells = [method]
        for k in metrics:
            value = means[method].get(k, math.nan)
            if value is None or math.isnan(value):
                cells.append("–")
                continue
            text = _format(value, digits)
            cells.append(f"**{text}**" if value == best[k] else text)
        rank = ranks[method]
        rank_text = "–" if math.isnan(rank) else f"{rank:.2f}"
        cells.append(f"**{rank_text}**" if rank == best_rank else rank_text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_gallery(
    path: str | Path,
    title: str,
    panels: Sequence[tuple[str, np.ndarray]],
    panel_inches: float = 3.2,
) -> Path:
    """One row of labelled images (float 0..1, grey or colour) saved as a PNG atomically."""
    height, width = panels[0][1].shape[:2]
    fig = Figure(figsize=(panel_inches * len(panels), panel_inches * height / width + 0.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, image) in zip(axes[0], panels, strict=True):
        ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(label, fontsize=11)
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def write_report(
    path: str | Path,
    means: Mapping[str, Mapping[str, Mapping[str, float]]],
    direction: Mapping[str, str],
    context: Mapping[str, str],
    gallery: Sequence[str] = (),
    seconds: Mapping[str, float] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """The README-style evaluation report: context, a ranking table per test set (``means``:
    test set -> method -> metric), notes per test set, timings, gallery links."""
    lines = ["# Evaluation", ""]
    lines += [f"- **{key}**: {value}" for key, value in context.items()]
    for test_set, methods in means.items():
        lines += ["", f"## Ranking on {test_set}", "", ranking_table(methods, direction)]
        lines += [f"- {note}" for note in (notes or {}).get(test_set, ())]
    lines += [
        "",
        "↑: higher is better, ↓: lower is better; the best value of each metric is in bold.",
        "Mean rank: each method's rank per metric (1 = best), averaged over the metrics.",
        "",
    ]
    if seconds:
        lines += ["## Time per image", "", "| Method | seconds |", "|---|---|"]
        lines += [f"| {m} | {s:.3f} |" for m, s in seconds.items()]
        lines.append("")
    if gallery:
        lines += ["## Gallery", ""]
        lines += [f"![{Path(g).stem}]({g})" for g in gallery]
        lines.append("")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return Path(path)
