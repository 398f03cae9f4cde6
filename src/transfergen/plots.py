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
        if ax.get_legend_handles_labels()[0]:  # every panel: a reader looks at one at a time
            ax.legend(fontsize=8)
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
    ax.set_title(f"Test {metric} per arm and training-set size")
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
    ax.set_title(f"Test {metric} against training-set size")
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


def attention_maps(maps: dict[str, list], tokens: list[str], path: Path, title: str = "") -> None:
    """Each model's (T,T) attention map side by side, and below them what the last position
    attends to (the separator, which predicts the first target token) as bars per token.

    A causal map is empty above its diagonal: that half is left blank (white) instead of
    drawn as zeros, and a square-root colour scale keeps the weak off-diagonal structure
    visible beside the few strong entries (the bos "attention sink").
    """
    import warnings

    import numpy as np
    from matplotlib.colors import PowerNorm

    plt = _plt()
    arrays = {name: np.asarray(p, dtype=float) for name, p in maps.items()}
    for name, a in arrays.items():
        if a.ndim != 2 or a.shape[0] != a.shape[1] or len(tokens) != a.shape[0]:
            raise ValueError(f"attention_maps: {name}'s attention {a.shape} does not fit {len(tokens)} tokens")
    n, t = len(arrays), len(tokens)
    side = min(6.0, max(3.0, 0.14 * t + 1.5))  # small cells: the bars below carry the labels
    fig, axes = plt.subplots(2, n, figsize=(side * n, side + 2.6), squeeze=False,
                             gridspec_kw={"height_ratios": [side, 2.2]})
    try:
        for j, (name, a) in enumerate(arrays.items()):
            _attention_panel(axes[0, j], axes[1, j], a, tokens, name, PowerNorm(0.5, vmin=0.0, vmax=1.0))
        if title:
            fig.suptitle(title)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # tokens in scripts the default font lacks (CJK)
            warnings.filterwarnings("ignore", message="Glyph .* missing")
            fig.tight_layout()
            fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


def _attention_panel(top, bottom, a, tokens: list[str], name: str, norm) -> None:
    """One model: the map (upper triangle masked) above, the last row as bars below."""
    import numpy as np

    masked = np.ma.masked_where(np.triu(np.ones_like(a, dtype=bool), k=1), a)
    top.imshow(masked, cmap="viridis", norm=norm)
    top.set_title(f"{name}: query (down) x key (across)", fontsize=9)
    top.set_xticks([])
    top.set_yticks([])
    x = list(range(len(tokens)))
    bottom.bar(x, a[-1], color="#1f77b4")
    bottom.set_xticks(x, labels=tokens, rotation=90, fontsize=7)
    bottom.set_xlim(-0.5, len(tokens) - 0.5)
    bottom.set_ylabel("attention of the last position", fontsize=8)
    bottom.grid(axis="y", alpha=0.3)
