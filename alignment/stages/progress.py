"""Trainer callbacks: a rich progress bar with live metrics, and step timing for ``stage.json``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from transformers import TrainerCallback

# Metrics shown next to the progress bar, in this order, with short labels.
SHOWN = (
    ("loss", "loss"),
    ("rewards/accuracies", "acc"),
    ("rewards/margins", "margin"),
    ("eval_loss", "eval loss"),
    ("eval_rewards/accuracies", "eval acc"),
)


def format_metrics(logs: dict[str, Any]) -> str:
    """Compact text for the metrics a log entry carries.

    >>> format_metrics({"loss": 0.69314, "rewards/accuracies": 0.75, "epoch": 1})
    'loss 0.6931  acc 0.750'
    """
    parts = []
    for key, label in SHOWN:
        value = logs.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.4f}" if "loss" in key else f"{label} {value:.3f}")
    return "  ".join(parts)


def step_progress(console: Any, *extra_columns: Any, **options: Any) -> Any:
    """A rich bar over steps: description, bar, done/total, elapsed and remaining time, ``extra_columns``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        **options,
    )


class RichProgress(TrainerCallback):
    """A rich progress bar (steps, elapsed, remaining) with the latest loss and reward metrics.

    On a terminal the bar updates live; elsewhere (logs, CI) each log entry becomes one printed line.
    Only the main process draws.
    """

    def __init__(self, description: str, console: Any = None) -> None:
        from alignment.console import err

        self.description = description
        self.console = console or err
        self.progress = None
        self.task = None
        self.stats: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import TextColumn

        self.progress = step_progress(
            self.console,
            TextColumn("{task.fields[metrics]}"),
            refresh_per_second=2,
            disable=not self.console.is_terminal,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self.description, total=state.max_steps or None, completed=state.global_step, metrics=""
        )
        if state.global_step:
            self.console.print(
                f"[dim]{self.description}: resumed at step {state.global_step}/{state.max_steps}[/]"
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        self.stats.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        text = format_metrics(self.stats)
        self.progress.update(self.task, metrics=text)
        if not self.console.is_terminal and format_metrics(logs):
            self.console.print(
                f"{self.description} step {state.global_step}/{state.max_steps}: {format_metrics(logs)}"
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


# Lists open in :func:`collecting_step_times`: every StepRecorder adds its ``durations`` to each.
STEP_TIME_COLLECTORS: list[list[list[float]]] = []


@contextmanager
def collecting_step_times() -> Iterator[list[list[float]]]:
    """Collect the per-step durations of every training stage run inside the block.

    Each :class:`StepRecorder` created in the block appends its ``durations`` list (filled as the run
    goes) to the yielded list, so a benchmark gets every step time, not just the stage's summary.
    """
    runs: list[list[float]] = []
    STEP_TIME_COLLECTORS.append(runs)
    try:
        yield runs
    finally:
        STEP_TIME_COLLECTORS.remove(runs)


class StepRecorder(TrainerCallback):
    """Times each optimizer step and calls ``on_checkpoint(step)`` after every checkpoint save."""

    def __init__(self, on_checkpoint: Callable[[int], None] | None = None) -> None:
        self.on_checkpoint = on_checkpoint
        self.durations: list[float] = []
        for runs in STEP_TIME_COLLECTORS:
            runs.append(self.durations)
        self.start_step: int | None = None
        self._t0 = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._t0)

    def on_save(self, args, state, control, **kwargs):
        if self.on_checkpoint is not None and state.is_world_process_zero:
            self.on_checkpoint(state.global_step)

    def summary(self) -> dict[str, Any]:
        """Median and spread of the step times, leaving out the first step (warm-up)."""
        times = self.durations[1:] or self.durations
        if not times:
            return {"n": 0}
        ordered = sorted(times)
        return {
            "n": len(times),
            "median_s": round(statistics.median(times), 4),
            "p10_s": round(ordered[int(0.1 * (len(ordered) - 1))], 4),
            "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "first_s": round(self.durations[0], 4),
        }


def first_non_finite(model: Any, trainable_only: bool = True) -> str | None:
    """The name of the first parameter holding NaN or inf (only trainable ones by default), or None.

    One sum per parameter first (NaN and inf propagate through it): a tenth of the time of an
    element-wise check, 0.07 s for a 135M model on one CPU thread. Only a parameter whose sum is not
    finite is checked element by element, since large finite weights can overflow a sum."""
    import torch

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not params:
        return None
    with torch.no_grad():
        sums = torch.isfinite(torch.stack([p.sum(dtype=torch.float32) for _, p in params]))
        if bool(sums.all()):
            return None
        return next(
            (n for (n, p), ok in zip(params, sums, strict=True) if not ok and not torch.isfinite(p).all()),
            None,
        )


def probe_ids(tokenizer: Any) -> list[int]:
    """Token ids of a short text whose logits :class:`FiniteGuard` checks after every step."""
    return tokenizer("The weather today is", add_special_tokens=False)["input_ids"] or [0]


def outputs_finite(model: Any, probe_ids: list[int]) -> bool:
    """Whether the model's logits on a short probe text are finite: weights can stay finite yet grow so
    large that every forward pass overflows (learning_rate 1e9), and the next sampling step would crash."""
    import torch

    device = next(model.parameters()).device
    training = model.training
    model.eval()  # no dropout: the probe draws no random numbers, so resumed runs stay identical
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([probe_ids], device=device)).logits
    finally:
        model.train(training)
    return bool(torch.isfinite(logits).all())


class FiniteGuard(TrainerCallback):
    """Stop training at the first step whose loss, updated weights or outputs are not finite.

    The check runs after every optimiser step, before that step can be saved as a checkpoint, so the
    newest checkpoint on disk is always the last good state (``GuardTripped`` names it)."""

    def __init__(self, probe_ids: list[int]) -> None:
        self.probe_ids = probe_ids

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        from alignment.rl.rollout import GuardTripped

        if model is None:
            return
        bad = first_non_finite(model)
        if bad is None and not outputs_finite(model, self.probe_ids):
            bad = "the logits of a probe text"
        if bad is not None:
            raise GuardTripped(
                f"the weights are not finite after step {state.global_step} (first: {bad}); lower "
                "learning_rate or check the input model"
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        import math

        from alignment.rl.rollout import GuardTripped

        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            step = state.global_step
            raise GuardTripped(f"the training loss is {loss} at step {step}; lower learning_rate")
