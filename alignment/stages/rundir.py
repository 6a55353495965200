"""A stage's run directory: ``stage.json``, checkpoints, the final model, and the skip/resume/force rules."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import SafealignError
from alignment.io import atomic_write_json
from alignment.stages.common import MODEL_DIR, STAGE_FILE

CHECKPOINTS = "checkpoints"
DATASET_DIR = "dataset"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Written last by the trainer, so a checkpoint that has it is complete.
_COMPLETE_MARKER = "trainer_state.json"


def checkpoints(folder: Path) -> list[tuple[int, Path, bool]]:
    """``(step, path, complete)`` for each ``checkpoint-N`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path, (path / _COMPLETE_MARKER).is_file()))
    return sorted(found)


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (a kill mid-save leaves an incomplete one)."""
    complete = [path for _, path, ok in checkpoints(folder) if ok]
    return complete[-1] if complete else None


@dataclass
class Decision:
    """What to do with a run directory: skip a finished stage, resume from a checkpoint, or start."""

    action: str  # "skip" | "resume" | "start"
    checkpoint: Path | None = None
    note: str | None = None
    clear: bool = False  # remove the previous outputs once the new run's input has been checked


def _diff_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class StageDir:
    """Paths and state of one stage's run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.stage_file = self.root / STAGE_FILE
        self.checkpoints = self.root / CHECKPOINTS
        self.model = self.root / MODEL_DIR
        self.dataset = self.root / DATASET_DIR

    def check_is_folder(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise SafealignError(f"{self.root}: is a file, not a folder; choose another output_dir")

    def foreign_files(self) -> list[str]:
        """What the folder holds besides a stage's own files (a stage never replaces those)."""
        from alignment.runs import LOCK_FILE, MANIFEST

        if not self.root.is_dir():
            return []
        own = {LOCK_FILE, MANIFEST, DATASET_DIR, CHECKPOINTS}
        return sorted(p.name for p in self.root.iterdir() if p.name not in own)

    def read(self) -> dict[str, Any] | None:
        if not self.stage_file.is_file():
            return None
        try:
            data = json.loads(self.stage_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SafealignError(f"{self.stage_file}: not valid JSON ({exc}); --force starts over") from exc
        return data if isinstance(data, dict) else None

    def write(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.stage_file, record)

    def decide(
        self,
        stage: str,
        config_hash: str,
        hashed: dict[str, Any],
        *,
        resume: bool,
        force: bool,
        defer_clear: bool = False,
    ) -> Decision:
        """Apply the rules: a finished stage is kept unless ``force``; an interrupted one needs ``resume``.

        With ``force`` the previous outputs are removed now, or, with ``defer_clear``, left for the
        caller to remove (``Decision.clear``) once the new run's input has been checked.
        """
        record = self.read()
        foreign = self.foreign_files() if record is None and not force else []
        if foreign:
            raise SafealignError(
                f"{self.root} holds files that are not a safealign {stage} stage ({', '.join(foreign[:3])}; "
                f"no {STAGE_FILE}): choose another output_dir, or pass --force to replace its {MODEL_DIR}/"
            )
        if force:
            if not defer_clear:
                self.clear()
            return Decision("start", note="--force: previous outputs removed", clear=defer_clear)
        if record is not None and record.get("stage") not in (None, stage):
            raise SafealignError(
                f"{self.root} holds a {record.get('stage')!r} stage, not {stage!r}: choose another output_dir"
            )
        same = record is not None and record.get("config_hash") == config_hash
        differs = _diff_keys(record.get("config_hashed", {}), hashed) if record and not same else []
        if record is not None and record.get("status") == "completed" and self.model.is_dir():
            if same:
                return Decision("skip", note=f"{stage} already finished in {self.root} (--force retrains)")
            raise SafealignError(
                f"{self.root} holds a finished {stage} stage trained with a different config "
                f"(changed: {', '.join(differs) or 'unknown'}): pass --force to retrain, or choose another "
                "output_dir"
            )
        checkpoint = last_complete_checkpoint(self.checkpoints)
        if checkpoint is None:
            return Decision("start", note="no checkpoint to resume from: starting" if resume else None)
        if not resume:
            raise SafealignError(
                f"{self.root} holds an unfinished {stage} run with a checkpoint at step "
                f"{checkpoint.name.split('-')[-1]}: pass --resume to continue it, or --force to start over"
            )
        if record is not None and not same:
            raise SafealignError(
                f"cannot resume {self.root}: its config differs (changed: {', '.join(differs) or 'unknown'})"
                ": resume with the same config, or pass --force to start over"
            )
        self.drop_incomplete_checkpoints()
        return Decision("resume", checkpoint=checkpoint)

    def drop_incomplete_checkpoints(self) -> list[Path]:
        """Remove checkpoints a kill left half-written, so rotation and resuming only see complete ones."""
        dropped = [path for _, path, ok in checkpoints(self.checkpoints) if not ok]
        for path in dropped:
            shutil.rmtree(path, ignore_errors=True)
        return dropped

    def clear(self) -> None:
        """Remove a previous stage's outputs (checkpoints, model, stage.json).

        A dataset built from a builder spec stays: the builder rebuilds it only when its sources or
        options changed.
        """
        for path in (self.checkpoints, self.model):
            shutil.rmtree(path, ignore_errors=True)
        self.stage_file.unlink(missing_ok=True)
