"""Training curves from a run's metrics.jsonl, drawn to a PNG (matplotlib, headless)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from gancore.fileio import atomic_write_bytes

PANELS = (
    ("Wasserstein estimate", ("wdist",)),
    ("critic / generator loss", ("d_loss", "g_loss")),
    ("gradient penalty", ("gp",)),
    ("AC-GAN class terms", ("ac_d", "ac_g")),
    ("GAN critic outputs", ("d_real", "d_fake")),
)


def read_metrics(path: Path) -> list[dict]:
    records = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by a kill: skip it rather than lose the plot
                continue
    return records


def plot_curves(metrics_path: Path, out_png: Path, title: str = "") -> bool:
    """Write the curves PNG; False when there is nothing to plot or matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = read_metrics(metrics_path)
    panels = [(name, [k for k in keys if any(k in r for r in records)]) for name, keys in PANELS]
    panels = [(name, keys) for name, keys in panels if keys]
    if not records or not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key, linewidth=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(out_png), buf.getvalue())
    return True
