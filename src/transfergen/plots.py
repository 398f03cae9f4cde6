"""The study report's figures (matplotlib, Agg: no display needed), one function each.

Every function takes plain numbers (from `results.py`) and a PNG path, so a figure can
be redrawn without touching the runs. Arms keep one colour across all figures.
"""

from __future__ import annotations

from pathlib import Path

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def color(arms: list[str], arm: str) -> str:
    return COLORS[arms.index(arm) % len(COLORS)] if arm in arms else "gray"


def learning_curves(curves: dict[str, dict[str, list]], arms: list[str], metric: str, path: Path,
                    title: str) -> None:
    """2x2: val loss vs steps and vs FLOPs, val metric vs steps and vs wall time.

    `curves[key][arm]` = [(step, flops, value), ...] for key in val_loss, metric;
    `curves["time"][arm]` = [(step, seconds, value of metric or loss), ...].
    """
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [(axes[0, 0], "val_loss", 0, "step", "validation loss"),
              (axes[0, 1], "val_loss", 1, "training FLOPs (target task)", "validation loss"),
              (axes[1, 0], metric, 0, "step", f"validation {metric}"),
              (axes[1, 1], "time", 1, "wall time (s)", f"validation {metric}")]
    for ax, key, x, xlabel, ylabel in panels:
        for arm, pts in curves.get(key, {}).items():
            if pts:
                ax.plot([p[x] for p in pts], [p[2] for p in pts], marker="o", ms=3, label=arm,
                        color=color(arms, arm))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def final_scores(rows: list[dict], arms: list[str], metric: str, per_seed: dict, baseline: float | None,
                 baseline_label: str, path: Path) -> None:
    """Bars: mean test metric per (size, arm); dots: each seed; dashed: the trivial baseline."""
    plt = _plt()
    sizes = sorted({r["size"] for r in rows}, key=lambda s: (s is None, s or 0))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4))
    width = 0.8 / max(len(arms), 1)
    for i, size in enumerate(sizes):
        for j, arm in enumerate(arms):
            row = next((r for r in rows if r["size"] == size and r["arm"] == arm), None)
            if row is None:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            ax.bar(x, row["test"]["mean"], width * 0.9, color=color(arms, arm), label=arm if i == 0 else None)
            seeds = per_seed.get((size, arm), [])
            ax.scatter([x] * len(seeds), seeds, color="black", s=10, zorder=3)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", label=baseline_label)
    ax.set_xticks(range(len(sizes)), [f"n={s}" if s else "all" for s in sizes])
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def metric_vs_size(rows: list[dict], arms: list[str], metric: str, baseline: float | None, path: Path) -> None:
    """Test metric (mean, error bar = std over seeds) against the number of training examples."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        pts = sorted((r["train_examples"], r["test"]["mean"], r["test"]["std"]) for r in rows if r["arm"] == arm)
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                        capsize=3, label=arm, color=color(arms, arm))
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", label="trivial baseline")
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def layer_change(per_arm: dict[str, dict], arms: list[str], path: Path) -> None:
    """Left: relative weight change per layer; right: CKA(pretrained, fine-tuned) per layer."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, rep in per_arm.items():
        wc, cka = rep.get("weight_change", []), rep.get("cka", [])
        left.plot([r["name"] for r in wc], [r["relative_change"] for r in wc], marker="o", label=arm,
                  color=color(arms, arm))
        right.plot([r["name"] for r in cka], [r["cka"] for r in cka], marker="o", label=arm, color=color(arms, arm))
    left.set_ylabel("||W_ft - W_pre|| / ||W_pre||")
    right.set_ylabel("linear CKA, pretrained vs fine-tuned")
    right.set_ylim(0, 1.05)
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=45)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def attention_map(probs, tokens: list[str], path: Path, title: str = "") -> None:
    """A (T,T) attention map (nested lists or an array) as a heatmap: queries down, keys
    across, tokens as labels."""
    import warnings

    import numpy as np

    plt = _plt()
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1] or len(tokens) != probs.shape[0]:
        raise ValueError(f"attention_map: attention {probs.shape} does not fit {len(tokens)} tokens")
    side = max(4.0, 0.3 * len(tokens) + 2.0)  # about 0.3 inch per token keeps labels legible
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        image = ax.imshow(probs, cmap="viridis", vmin=0.0)
        ticks = list(range(len(tokens)))
        ax.set_xticks(ticks, labels=tokens, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels=tokens, fontsize=8)
        ax.set(xlabel="key", ylabel="query", title=title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # tokens in scripts the default font lacks (CJK)
            warnings.filterwarnings("ignore", message="Glyph .* missing")
            fig.tight_layout()
            fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
