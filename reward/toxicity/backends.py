"""Toxicity backends other than the packaged BiLSTM: detoxify, any HF text classifier, profanity-check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alignment.errors import SafealignError
from alignment.paths import is_offline
from reward.toxicity.base import ToxicityScorer, pick_label

DETOXIFY_VARIANTS = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")


def detoxify_checkpoint_file(variant: str) -> Path:
    """Where torch hub keeps (or would keep) the downloaded checkpoint of a detoxify variant."""
    from detoxify.detoxify import MODEL_URLS

    return Path(torch.hub.get_dir()) / "checkpoints" / MODEL_URLS[variant].rsplit("/", 1)[-1]


def detoxify_available(variant: str = "original") -> bool:
    """True when the variant's checkpoint is already on disk (``auto`` never downloads)."""
    try:
        return detoxify_checkpoint_file(variant).is_file()
    except ImportError:
        return False


class DetoxifyScorer(ToxicityScorer):
    """detoxify (unitary): a named variant (downloaded from GitHub once) or a local ``.ckpt`` checkpoint.

    ``hf_config`` is a local folder with the HF config and tokenizer of the checkpoint's base model,
    which detoxify otherwise fetches from the hub; pass it to run fully offline.
    """

    name = "detoxify"
    default_batch_size = 16

    def __init__(
        self,
        variant: str = "original",
        device: str | None = None,
        label: str | None = None,
        hf_config: str | Path | None = None,
    ) -> None:
        super().__init__()
        try:
            from detoxify import Detoxify
        except ImportError as exc:
            raise SafealignError("the detoxify backend needs `pip install detoxify`") from exc
        checkpoint = None
        if variant not in DETOXIFY_VARIANTS:
            checkpoint = Path(variant)
            if not checkpoint.is_file():
                raise SafealignError(
                    f"detoxify: {variant!r} is neither a variant ({', '.join(DETOXIFY_VARIANTS)}) "
                    "nor an existing checkpoint file"
                )
        elif is_offline() and not detoxify_available(variant):
            raise SafealignError(
                f"detoxify:{variant} needs its checkpoint from GitHub, but the hub is offline and "
                f"{detoxify_checkpoint_file(variant)} does not exist: download it once online, pass a local "
                "checkpoint (detoxify:/path/model.ckpt), or use the offline scorer jigsaw-bilstm"
            )
        self.device = device or "cpu"
        try:
            self.model = Detoxify(
                model_type=variant if checkpoint is None else "original",
                checkpoint=str(checkpoint) if checkpoint else None,
                device=self.device,
                huggingface_config_path=str(hf_config) if hf_config else None,
            )
        except Exception as exc:  # network, hub and checkpoint errors all surface here
            hint = (
                ""
                if hf_config
                else " (offline, pass hf_config: a local folder with its HF config and tokenizer)"
            )
            raise SafealignError(
                f"detoxify:{variant} could not be loaded: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}"
            ) from exc
        self.labels = tuple(self.model.class_names)
        self.primary = pick_label(
            self.labels, label or ("toxicity" if "toxicity" in self.labels else None), "detoxify"
        )
        self.info = {"backend": self.name, "variant": variant, "label": self.primary}
        if checkpoint is not None:
            self.info["checkpoint"] = str(checkpoint)

    def _predict(self, texts: list[str]) -> np.ndarray:
        result = self.model.predict(texts)
        columns = [np.atleast_1d(np.asarray(result[label], dtype=np.float64)) for label in self.labels]
        return np.stack(columns, axis=1)


TOXIC_LABEL_GUESSES = ("toxic", "toxicity", "hate", "offensive", "hateful", "label_1")


class HFClassifierScorer(ToxicityScorer):
    """Any Hugging Face sequence-classification model (hub id or local folder).

    Multi-label models (``problem_type: multi_label_classification`` or a single logit) get a sigmoid
    per label, others a softmax. The toxic label is ``label`` if given, else the first label whose name
    looks toxic (``toxic``, ``toxicity``, ``hate``, ``offensive``, ``LABEL_1``).
    """

    name = "hf"
    default_batch_size = 16

    def __init__(
        self,
        model: str,
        device: str | None = None,
        label: str | None = None,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model)
        except (OSError, ValueError) as exc:
            offline = " (the hub is offline: pass a local folder)" if is_offline() else ""
            raise SafealignError(
                f"hf:{model}: cannot load a text-classification model: {str(exc).splitlines()[0]}{offline}"
            ) from exc
        self.device = torch.device(device or "cpu")
        self.model.to(self.device).eval()
        config = self.model.config
        self.labels = tuple(config.id2label[i] for i in range(config.num_labels))
        self.multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        if label is None:
            lowered = {lab.lower(): lab for lab in self.labels}
            label = next((lowered[g] for g in TOXIC_LABEL_GUESSES if g in lowered), None)
            if label is None:
                raise SafealignError(
                    f"hf:{model}: cannot tell which label means toxic among {', '.join(self.labels)}; "
                    "pass label=<name>"
                )
        self.primary = pick_label(self.labels, label, f"hf:{model}")
        positions = getattr(config, "max_position_embeddings", None)
        self.max_length = min(max_length, positions) if positions else max_length
        self.info = {
            "backend": self.name,
            "model": model,
            "label": self.primary,
            "multi_label": self.multi_label,
        }

    @torch.inference_mode()
    def _predict(self, texts: list[str]) -> np.ndarray:
        inputs = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        ).to(self.device)
        logits = self.model(**inputs).logits.float()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy()


class ProfanityScorer(ToxicityScorer):
    """``alt-profanity-check``: a TF-IDF + linear SVM for profanity and insults (one label)."""

    name = "profanity"
    labels = ("profanity",)
    primary = "profanity"
    default_batch_size = 256

    def __init__(self, device: str | None = None, label: str | None = None) -> None:
        super().__init__()
        try:
            import profanity_check
        except ImportError as exc:
            raise SafealignError("the profanity backend needs `pip install alt-profanity-check`") from exc
        pick_label(self.labels, label, self.name)
        self._predict_prob = profanity_check.predict_prob
        self.info = {"backend": self.name, "label": self.primary}

    def _predict(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._predict_prob(texts), dtype=np.float64).reshape(-1, 1)
