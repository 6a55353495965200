"""Train the stereotype classifier on the train side of the grouped splits and report held-out metrics.

``mode="head"`` (the default) freezes the encoder, embeds every training sentence once and fits the
linear head on the pooled vectors (minutes on a CPU for the full data); ``mode="full"`` fine-tunes
encoder and head together (every step also runs the encoder backwards: meant for a GPU). The loss
is the negative log of the probability mass on the labels an example allows, so exact labels
(StereoSet, CrowS-Pairs) and "not stereotype" labels (rewrites) train the same three-way head.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignment.errors import SafealignError
from reward.stereotype.data import LABELS, SOURCES, Example, load_examples
from reward.stereotype.metrics import report
from reward.stereotype.model import StereotypeClassifier, default_model_dir

MODES = ("head", "full")
KIND = "train-stereotype"  # the manifest's kind: the only folders a new classifier may replace
Progress = Callable[[int, int, float], None]


@dataclass
class StereotypeTrainConfig:
    """How to train the stereotype classifier (``safealign reward train-stereotype``)."""

    out: str | None = field(
        default=None, metadata={"help": "output folder (default: the cache's stereotype-classifier)"}
    )
    backbone: str = field(
        default="minilm-l6", metadata={"help": "encoder: minilm-l6, a local folder or a hub id"}
    )
    mode: str = field(
        default="head",
        metadata={"help": "head (frozen encoder: minutes on a CPU) or full (fine-tune; use a GPU)"},
    )
    sources: list[str] = field(default_factory=lambda: list(SOURCES), metadata={"help": "training sources"})
    stereoset_path: str | None = field(default=None, metadata={"help": "StereoSet file (default: data dir)"})
    crows_pairs_path: str | None = field(
        default=None, metadata={"help": "CrowS-Pairs CSV (default: data dir)"}
    )
    rewrite_path: str | None = field(
        default=None, metadata={"help": "rewrite pairs file (default: data dir)"}
    )
    epochs: int | None = field(
        default=None, metadata={"help": "passes over the data (default: 3 full, 40 head)"}
    )
    batch_size: int = field(default=32, metadata={"help": "sentences per step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "encoder learning rate (full mode)"})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "head learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up share of the steps"})
    max_length: int = field(default=128, metadata={"help": "tokens per sentence (longer ones are truncated)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the pooled vector"})
    test_fraction: float = field(
        default=0.2, metadata={"help": "held-out share of groups (as the evaluation)"}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={"help": "share of groups carved from training as a validation split (never trained on)"},
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the grouped split (as the evaluation)"})
    seed: int = field(default=0, metadata={"help": "training seed (init, shuffling, dropout)"})
    limit: int | None = field(
        default=None, metadata={"help": "keep N examples per source and split (quick runs)"}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: best available)"})
    force: bool = field(
        default=False,
        metadata={"help": "replace an out folder that holds something other than a stereotype classifier"},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ValueError(f"sources must be among {', '.join(SOURCES)}, got {self.sources}")
        if self.batch_size < 1 or (self.epochs is not None and self.epochs < 1):
            raise ValueError("batch_size and epochs must be at least 1")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    @property
    def num_epochs(self) -> int:
        return self.epochs or (3 if self.mode == "full" else 40)

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser() if self.out else default_model_dir()


def allowed_mask(examples: Sequence[Example]) -> torch.Tensor:
    """``(n, 3)`` booleans: which labels each example allows."""
    return torch.tensor([[label in e.allowed for label in LABELS] for e in examples])


def partial_label_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log sum_{allowed} p(label)``; with one allowed label this is cross-entropy.

    >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    >>> bool(torch.isclose(partial_label_loss(logits, torch.tensor([[True, False, False]])), ce))
    True
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1).masked_fill(~mask, float("-inf"))
    return -torch.logsumexp(log_probs, dim=-1).mean()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(size))


def _train_head(model, train, config, device, progress: Progress | None, curve: list) -> None:
    model.encoder.requires_grad_(False).eval()
    features = model.embed_texts([e.text for e in train], batch_size=64).clone()
    with _single_thread():  # tiny ops: thread hand-offs would cost more than the arithmetic
        _fit_head(model, features, allowed_mask(train).to(device), config, progress, curve)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit_head(model, features, mask, config, progress: Progress | None, curve: list) -> None:
    optimizer = torch.optim.AdamW(
        model.head.parameters(), lr=config.head_learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    total = config.num_epochs * -(-len(features) // config.batch_size)
    step = 0
    for epoch in range(config.num_epochs):
        losses = []
        for index in _batches(len(features), config.batch_size, generator):
            index = index.to(features.device)
            loss = partial_label_loss(model.head(model.dropout(features[index])), mask[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if progress:
                progress(step, total, loss.item())
        curve.append({"epoch": epoch + 1, "step": step, "loss": round(float(np.mean(losses)), 5)})


def _train_full(model, train, config, device, progress: Progress | None, curve: list) -> None:
    from transformers import get_linear_schedule_with_warmup

    mask = allowed_mask(train)
    texts = [e.text for e in train]
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": config.learning_rate},
            {"params": model.head.parameters(), "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = config.num_epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    step, window = 0, []
    for _ in range(config.num_epochs):
        for index in _batches(len(train), config.batch_size, generator):
            logits = model(model.tokenize([texts[i] for i in index.tolist()]))
            loss = partial_label_loss(logits, mask[index].to(device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append(loss.item())
            if progress:
                progress(step, total, loss.item())
            if step % 50 == 0 or step == total:
                curve.append(
                    {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 3),
                        "loss": round(float(np.mean(window)), 5),
                    }
                )
                window = []
    model.eval()


def _headline(metrics: dict[str, Any]) -> float | None:
    source = metrics["by_source"].get("stereoset") or metrics["overall"]
    return source.get("macro_f1")


def train_stereotype(config: StereotypeTrainConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out groups and save to ``config.out_dir``; returns the metrics.

    ``out_dir`` is replaced only when it holds an earlier classifier (or ``force`` is set), and is locked
    while this runs."""
    from alignment.runs import claim_output_dir, lock_run_dir

    claim_output_dir(config.out_dir, KIND, force=config.force)  # before any work: never replace a stranger
    with lock_run_dir(config.out_dir):
        return _train_and_save(config, progress)


def _train_and_save(config: StereotypeTrainConfig, progress: Progress | None) -> dict[str, Any]:
    from alignment.device import describe_device, pick_device
    from alignment.io import atomic_dir, atomic_write_json, atomic_write_text
    from alignment.runs import git_commit, package_versions

    t0 = time.monotonic()
    _seed_everything(config.seed)
    paths = {
        "stereoset": config.stereoset_path,
        "crows_pairs": config.crows_pairs_path,
        "rewrite": config.rewrite_path,
    }
    examples, provenance = load_examples(
        config.sources, paths, config.test_fraction, config.split_seed, config.limit, config.val_fraction
    )
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split == "test"]
    if not train or not test:
        raise SafealignError(
            f"stereotype training needs both splits; got {len(train)} train and {len(test)} held-out examples"
        )
    device = pick_device(config.device)
    model = StereotypeClassifier.from_backbone(config.backbone, config.max_length, config.dropout).to(device)
    curve: list[dict[str, Any]] = []
    (_train_head if config.mode == "head" else _train_full)(model, train, config, device, progress, curve)
    train_seconds = time.monotonic() - t0

    rows = model.predict([e.text for e in test], batch_size=64)
    probs = np.array([[row[label] for label in LABELS] for row in rows])
    metrics = report(test, probs, seed=config.seed)
    metrics["split"] = {
        "name": "heldout",
        "rule": provenance["split_rule"],
        "test_fraction": config.test_fraction,
        "val_fraction": config.val_fraction,
        "split_seed": config.split_seed,
        "train_examples": len(train),
        "test_examples": len(test),
    }
    metrics["seed"] = config.seed
    model.meta.update(
        mode=config.mode,
        heldout_macro_f1=_headline(metrics),
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest = {
        "kind": KIND,
        "command": "train-stereotype",
        "config": asdict(config),
        "seed": config.seed,
        "data": provenance,
        "loss_curve": curve,
        "train_seconds": round(train_seconds, 2),
        "wall_time_s": round(time.monotonic() - t0, 2),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": describe_device(),
    }
    split = {
        source: {
            s: sorted({e.group for e in examples if e.source == source and e.split == s})
            for s in ("train", "test")
        }
        for source in config.sources
    }
    predictions = "".join(
        json.dumps(
            {
                "text": e.text,
                "source": e.source,
                "bias_type": e.bias_type,
                "group": e.group,
                "allowed": list(e.allowed),
                "probs": dict(zip(LABELS, map(float, p), strict=True)),
            }
        )
        + "\n"
        for e, p in zip(test, probs, strict=True)
    )
    with atomic_dir(config.out_dir) as folder:
        model.save(folder)
        atomic_write_json(folder / "metrics.json", metrics)
        atomic_write_json(folder / "manifest.json", manifest)
        atomic_write_json(folder / "split.json", split)
        atomic_write_text(folder / "heldout_predictions.jsonl", predictions)
    return metrics
