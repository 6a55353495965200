"""Report figures as PNG bytes: the bias/retention trade-off, per-category bars, training curves."""

from __future__ import annotations

import io
from typing import Any

from alignment.report.compare import Cell, MetricRow, distance_to_goal


def new_figure(width: float = 6.4, height: float = 4.0, ncols: int = 1):
    """A figure with one row of ``ncols`` axes (headless backend), as ``(fig, axes[1][ncols])``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=110, squeeze=False)


def to_png(fig) -> bytes:
    """The figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def tradeoff_points(
    rows: list[MetricRow], stages: list[str], base: str = "base"
) -> dict[str, tuple[float, float]]:
    """Per stage: (bias index, capability score).

    Bias index: the mean over bias rows of the stage's distance to the ideal divided by the base's
    (1.0 = as biased as base, lower is better). Capability score: the mean of the capability rows.
    """
    points = {}
    for stage in stages:
        ratios, capability = [], []
        for row in rows:
            if stage not in row.cells or base not in row.cells:
                continue
            if row.kind == "bias":
                ideal = row.goal if isinstance(row.goal, float) else None
                base_d = abs(row.cells[base].value - ideal) if ideal is not None else None
                if base_d:
                    ratios.append(abs(row.cells[stage].value - ideal) / base_d)
                elif ideal is None:
                    base_v = distance_to_goal(row.cells[base].value, row.goal)
                    if base_v:
                        ratios.append(distance_to_goal(row.cells[stage].value, row.goal) / base_v)
            elif row.capability:
                capability.append(row.cells[stage].value)
        if ratios and capability:
            points[stage] = (sum(ratios) / len(ratios), sum(capability) / len(capability))
    return points


def tradeoff_plot(rows: list[MetricRow], stages: list[str]) -> bytes | None:
    points = tradeoff_points(rows, stages)
    if len(points) < 1:
        return None
    fig, axes = new_figure()
    ax = axes[0][0]
    xs = [points[s][0] for s in stages if s in points]
    ys = [points[s][1] for s in stages if s in points]
    ax.plot(xs, ys, "-", color="#bbbbbb", zorder=1)
    for stage in (s for s in stages if s in points):
        x, y = points[stage]
        ax.scatter([x], [y], s=60, zorder=2)
        ax.annotate(stage, (x, y), textcoords="offset points", xytext=(6, 6))
    ax.axvline(1.0, color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("bias index: distance to ideal relative to base (lower is better)")
    ax.set_ylabel("capability score: mean of capability metrics (%)")
    ax.set_title("Bias vs retention by stage")
    return to_png(fig)


def category_bars(
    cells: dict[str, dict[str, Cell]], stages: list[str], title: str, ylabel: str, ideal: float | None
) -> bytes | None:
    """Grouped bars: one group per category, one bar per stage, 95% CI error bars."""
    if not cells:
        return None
    categories = sorted(cells)
    shown = [s for s in stages if any(s in cells[c] for c in categories)]
    fig, axes = new_figure(max(6.4, 0.35 * len(categories) * max(1, len(shown)) + 2), 4.2)
    ax = axes[0][0]
    width = 0.8 / max(1, len(shown))
    for i, stage in enumerate(shown):
        xs, ys, errs = [], [], []
        for j, category in enumerate(categories):
            cell = cells[category].get(stage)
            if cell is None:
                continue
            xs.append(j + (i - (len(shown) - 1) / 2) * width)
            ys.append(cell.value)
            low = cell.value - cell.ci_low if cell.ci_low is not None else 0.0
            high = cell.ci_high - cell.value if cell.ci_high is not None else 0.0
            errs.append((low, high))
        ax.bar(xs, ys, width=width, label=stage, yerr=[[e[0] for e in errs], [e[1] for e in errs]], capsize=2)
    if ideal is not None:
        ax.axhline(ideal, color="black", linestyle="--", linewidth=1, label=f"ideal ({ideal:g})")
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_png(fig)


CURVE_PANELS = (
    ("loss", "training loss"),
    ("rewards/accuracies", "DPO reward accuracy"),
    ("rewards/margins", "DPO reward margin"),
    ("reward", "PPO reward"),
    ("kl", "PPO KL to reference"),
)


def training_curves(stage_records: dict[str, dict[str, Any]]) -> bytes | None:
    """One panel per logged quantity, one line per stage, from each stage.json's ``curves.train``."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for stage, record in stage_records.items():
        for point in (record.get("curves") or {}).get("train", []):
            for key, _ in CURVE_PANELS:
                if point.get(key) is not None and point.get("step") is not None:
                    xs, ys = series.setdefault(key, {}).setdefault(stage, ([], []))
                    xs.append(point["step"])
                    ys.append(point[key])
    panels = [(key, label) for key, label in CURVE_PANELS if key in series]
    if not panels:
        return None
    fig, axes = new_figure(4.0 * len(panels), 3.4, ncols=len(panels))
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for stage, (xs, ys) in series[key].items():
            ax.plot(xs, ys, label=stage)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    return to_png(fig)
