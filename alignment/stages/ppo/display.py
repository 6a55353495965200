"""The PPO stage's terminal display: a progress bar over iterations with a live table of the latest
logged steps (one printed line per step when the output is not a terminal)."""

from __future__ import annotations

from typing import Any

# (key, column title, format) of the live table and the printed log lines.
COLUMNS = (
    ("step", "step", "{:.0f}"),
    ("reward", "reward", "{:.4f}"),
    ("kl", "KL", "{:.3f}"),
    ("kl_coef", "beta", "{:.3g}"),
    ("entropy", "entropy", "{:.3f}"),
    ("clip_fraction", "clip", "{:.3f}"),
    ("approx_kl", "approx KL", "{:.4f}"),
    ("value_loss", "V loss", "{:.4f}"),
    ("explained_variance", "expl var", "{:.2f}"),
    ("response_length", "length", "{:.1f}"),
    ("step_time_s", "s/step", "{:.2f}"),
)


def format_row(row: dict[str, Any]) -> list[str]:
    """Table cells for one log row.

    >>> format_row({"step": 3, "reward": 0.5, "kl": float("nan")})[:3]
    ['3', '0.5000', 'nan']
    """
    cells = []
    for key, _, fmt in COLUMNS:
        value = row.get(key)
        cells.append(fmt.format(value) if isinstance(value, (int, float)) else "")
    return cells


class LiveLog:
    """A progress bar over PPO iterations with a live table of the latest logged steps (main process)."""

    def __init__(self, title: str, total: int, done: int, enabled: bool, keep: int = 8) -> None:
        from alignment.console import err

        self.console = err
        self.enabled = enabled
        self.title, self.total, self.keep = title, total, keep
        self.rows: list[dict[str, Any]] = []
        self.live = None
        self.progress = None
        if not enabled:
            return
        from alignment.stages.progress import step_progress

        self.progress = step_progress(self.console)
        self.task = self.progress.add_task(title, total=total, completed=done)
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=2)
            self.live.start()
        elif done:
            self.console.print(f"{title}: resumed at step {done}/{total}")

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for _, title, _ in COLUMNS:
            table.add_column(title, justify="right")
        for row in self.rows[-self.keep :]:
            table.add_row(*format_row(row))
        return Group(self.progress, table)

    def advance(self, step: int, row: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        self.progress.update(self.task, completed=step)
        if row is not None:
            self.rows.append(row)
            if self.live is None:
                cells = format_row(row)
                self.console.print(
                    f"{self.title} "
                    + "  ".join(f"{t} {c}" for (_, t, _), c in zip(COLUMNS, cells, strict=True) if c)
                )
        if self.live is not None:
            self.live.update(self._render())

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
