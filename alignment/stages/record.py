"""A stage's ``stage.json`` while it runs: the fields every stage records, timed segments, the manifest.

Both drivers (:func:`alignment.stages.runner.run_stage` for the TRL stages and
:func:`alignment.stages.ppo.run_ppo`) keep their record through :class:`StageRecord`, so a run
directory reads the same whichever trainer wrote it.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

from alignment.io import sha256_json
from alignment.stages.common import Precision, StageConfig, base_pointer
from alignment.stages.rundir import StageDir


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_hash(cfg: StageConfig) -> str:
    return sha256_json(cfg.hashed_items())


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated/reserved GPU memory."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    memory = {"process_peak_rss_mb": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available():
        memory["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        memory["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return memory


def record_head(stage: str, cfg: StageConfig, source: Any) -> dict[str, Any]:
    """The first ``stage.json`` fields: stage, status, config and its hash, and the input model."""
    return {
        "stage": stage,
        "status": "running",
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "config_hashed": cfg.hashed_items(),
        "input_model": {
            "spec": cfg.model,
            "kind": source.kind,
            "path": source.path,
            "base": base_pointer(source),
        },
    }


def precision_fields(precision: Precision) -> dict[str, Any]:
    return {
        "device": precision.device,
        "name": precision.name,
        "load_dtype": precision.load_dtype,
        "quantized_4bit": precision.quantize_4bit,
    }


def resumed_fields(previous: dict[str, Any]) -> dict[str, Any]:
    """Start time, timed segments and last checkpoint carried over from the run being resumed (if any)."""
    return {
        "started_at": previous.get("started_at") or now(),
        "segments": previous.get("segments", []),
        "last_checkpoint_step": previous.get("last_checkpoint_step"),
    }


class StageRecord:
    """``stage.json`` of a running stage (written by the main process only) and its run manifest.

    Wall time is kept in segments, one per process lifetime, so a resumed run adds up all its work;
    each checkpoint records the time up to it, which a later resume counts.
    """

    def __init__(self, sd: StageDir, fields: dict[str, Any], *, is_main: bool, from_step: int = 0) -> None:
        self.sd, self.fields, self.is_main = sd, fields, is_main
        self.run = None
        self._t0 = time.monotonic()
        self._previous = list(fields["segments"])
        self.segment: dict[str, Any] = {"started_at": now(), "from_step": from_step}

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def save(self, **fields: Any) -> None:
        self.fields.update(fields)
        if self.is_main:
            self.sd.write(self.fields)

    def open(self, cfg: StageConfig) -> None:
        """Create the run directory, write the record and start the run manifest (main process)."""
        from alignment.runs import start_run

        if self.is_main:
            self.sd.root.mkdir(parents=True, exist_ok=True)
            self.sd.write(self.fields)
            self.run = start_run(
                self.sd.root.name,
                command=sys.argv,
                config=cfg,
                seed=cfg.seed,
                root=self.sd.root.parent,
                kind=f"train-{self.fields['stage']}",
            )

    def on_checkpoint(self, step: int) -> None:
        elapsed = dict(self.segment, to_step=step, wall_time_s=self._elapsed())
        self.save(last_checkpoint_step=step, segments=self._previous + [elapsed])

    def complete(
        self,
        stage: str,
        *,
        global_step: int,
        max_steps: int,
        metrics: dict[str, Any],
        curves: dict[str, Any],
        model: dict[str, Any],
        step_time: dict[str, Any],
    ) -> None:
        """Record a finished run (status ``completed``) and close the manifest."""
        from alignment.runs import finish_run

        self.segment.update(ended_at=now(), to_step=global_step, wall_time_s=self._elapsed())
        segments = self._previous + [self.segment]
        self.save(
            status="completed",
            ended_at=now(),
            metrics=metrics,
            curves=curves,
            model=model,
            steps={
                "global_step": global_step,
                "max_steps": max_steps,
                "resumed_from_step": self.segment["from_step"] or None,
            },
            segments=segments,
            wall_time_s=round(sum(s.get("wall_time_s", 0.0) for s in segments), 3),
            step_time=step_time,
            peak_memory=peak_memory(),
        )
        if self.run is not None:
            finish_run(self.run, stage=stage, model=str(self.sd.model))

    def fail(self, exc: BaseException) -> None:
        """Record why the run ended early (``interrupted``, ``failed``, or a guard's ``stopped``)."""
        from alignment.runs import finish_run

        status = self.fields.get("status")
        if status != "stopped":
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        self.segment.update(ended_at=now(), wall_time_s=self._elapsed())
        self.save(
            status=status,
            error=f"{type(exc).__name__}: {exc}",
            segments=self._previous + [self.segment],
            peak_memory=peak_memory(),
        )
        if self.run is not None:
            finish_run(self.run, status, error=f"{type(exc).__name__}: {exc}")
