"""A stereotype classifier the toolkit trains itself, used as a reward and as an evaluation signal."""

from reward.stereotype.data import LABELS, SOURCES, Example, load_examples
from reward.stereotype.model import StereotypeClassifier, default_model_dir
from reward.stereotype.train import StereotypeTrainConfig, train_stereotype

__all__ = [
    "LABELS",
    "SOURCES",
    "Example",
    "StereotypeClassifier",
    "StereotypeTrainConfig",
    "default_model_dir",
    "load_examples",
    "train_stereotype",
]
