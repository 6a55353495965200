"""The packaged Jigsaw BiLSTM toxicity model (``toxic-comment-classifier``), run in torch.

The package ships Keras 3 weights (``model.weights.h5``) and a pickled Keras ``Tokenizer``; importing
the package would import TensorFlow, so both files are read directly: the weights with ``h5py`` and
the tokenizer with a restricted unpickler that only accepts the few classes that pickle needs and
maps the Keras class onto :class:`WordIndexTokenizer`.

The network: Embedding(20000, 50) -> bidirectional LSTM(50) over all time steps -> max over time ->
Dense(50, relu) -> Dense(6, sigmoid). Inputs are word ids left-padded (and left-truncated) to 100
positions, as Keras' ``pad_sequences`` does by default, and the original scores every position,
padding included (no mask), so a text's scores do not depend on what else is in its batch.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignment.errors import SafealignError
from reward.toxicity.base import ToxicityScorer, pick_label

MAXLEN = 100
# The package's label names, and the names detoxify uses for the same Jigsaw labels (ours).
KERAS_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_FILE = "tokenizer.pickle"


class WordIndexTokenizer:
    """Stand-in for the pickled Keras ``Tokenizer``: keeps its settings and word index, nothing else.

    >>> tok = WordIndexTokenizer(word_index={"you": 1, "are": 2, "nice": 3}, num_words=3)
    >>> tok.texts_to_sequences(["You are NICE!", "you, you"])
    [[1, 2], [1, 1]]
    """

    def __init__(
        self,
        word_index: dict[str, int],
        num_words: int | None = None,
        filters: str = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n',
        lower: bool = True,
        split: str = " ",
        oov_token: str | None = None,
        char_level: bool = False,
    ) -> None:
        self.__setstate__(
            dict(
                word_index=word_index,
                num_words=num_words,
                filters=filters,
                lower=lower,
                split=split,
                oov_token=oov_token,
                char_level=char_level,
            )
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Only the fields that tokenization needs; counts and document stats are dropped.
        self.word_index: dict[str, int] = dict(state["word_index"])
        self.num_words: int | None = state.get("num_words")
        self.filters: str = state.get("filters", "")
        self.lower: bool = state.get("lower", True)
        self.split: str = state.get("split", " ")
        self.oov_token: str | None = state.get("oov_token")
        self.char_level: bool = state.get("char_level", False)
        if state.get("analyzer") is not None:
            raise SafealignError("the pickled tokenizer uses a custom analyzer, which is not supported")
        self._table = str.maketrans({c: self.split for c in self.filters})

    def words(self, text: str) -> list[str]:
        """Split like Keras: lowercase, turn every filter character into the separator, drop empties."""
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        return [w for w in text.translate(self._table).split(self.split) if w]

    def texts_to_sequences(self, texts: list[str]) -> list[list[int]]:
        """Word ids per text; unknown words (and words past ``num_words``) map to the OOV id or vanish."""
        oov_id = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        sequences = []
        for text in texts:
            ids = []
            for word in self.words(text):
                index = self.word_index.get(word)
                if index is None or (self.num_words and index >= self.num_words):
                    index = oov_id
                if index is not None:
                    ids.append(index)
            sequences.append(ids)
        return sequences


class _TokenizerUnpickler(pickle.Unpickler):
    """Unpickles a Keras ``Tokenizer`` without Keras, refusing every class it does not expect."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "int"): int,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
    }

    def find_class(self, module: str, name: str) -> Any:
        if name == "Tokenizer" and module.split(".")[-2:] == ["preprocessing", "text"]:
            return WordIndexTokenizer
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the tokenizer pickle")


def load_keras_tokenizer(path: str | Path) -> WordIndexTokenizer:
    """Read a pickled Keras ``Tokenizer`` safely (only known classes are allowed)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SafealignError(f"{path}: tokenizer file not found") from exc
    try:
        tokenizer = _TokenizerUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, TypeError, ValueError) as exc:
        raise SafealignError(f"{path}: not a pickled Keras Tokenizer this port can read ({exc})") from exc
    if not isinstance(tokenizer, WordIndexTokenizer):
        raise SafealignError(f"{path}: the pickle holds a {type(tokenizer).__name__}, not a Keras Tokenizer")
    return tokenizer


def pad_pre(sequences: list[list[int]], maxlen: int = MAXLEN) -> np.ndarray:
    """Keras' default ``pad_sequences``: keep the last ``maxlen`` ids, left-pad with 0.

    >>> pad_pre([[1, 2, 3], [4]], maxlen=2).tolist()
    [[2, 3], [0, 4]]
    """
    out = np.zeros((len(sequences), maxlen), dtype=np.int64)
    for row, ids in enumerate(sequences):
        kept = ids[-maxlen:] if ids else []
        if kept:
            out[row, maxlen - len(kept) :] = kept
    return out


class BiLSTMClassifier(nn.Module):
    """Embedding -> BiLSTM (all steps) -> max over time -> Dense(relu) -> Dense(sigmoid)."""

    def __init__(self, vocab_size: int, embed_dim: int, units: int, hidden: int, n_labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * units, hidden)
        self.head = nn.Linear(hidden, n_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps, _ = self.lstm(self.embedding(ids))
        pooled = steps.max(dim=1).values
        return torch.sigmoid(self.head(torch.relu(self.dense(pooled))))


def _read(h5: Any, key: str, path: Path) -> np.ndarray:
    if key not in h5:
        raise SafealignError(f"{path}: missing weight {key!r}; is this the toxic-comment-classifier BiLSTM?")
    return np.asarray(h5[key][()], dtype=np.float32)


def load_bilstm_weights(path: str | Path) -> BiLSTMClassifier:
    """Build :class:`BiLSTMClassifier` from a Keras 3 ``.weights.h5`` file of the packaged model.

    Keras keeps LSTM weights as ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)`` and one bias
    ``(4u,)`` with gates in the order input, forget, cell, output; torch uses the same gate order with
    transposed matrices and two biases (the second is left at zero).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SafealignError(f"{path}: weights file not found")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise SafealignError(f"{path}: not a readable HDF5 weights file ({exc})") from exc
    with h5:
        emb = _read(h5, "layers/embedding/vars/0", path)
        lstm = {
            side: [_read(h5, f"layers/bidirectional/{side}_layer/cell/vars/{i}", path) for i in range(3)]
            for side in ("forward", "backward")
        }
        dense_w, dense_b = (_read(h5, f"layers/dense/vars/{i}", path) for i in range(2))
        head_w, head_b = (_read(h5, f"layers/dense_1/vars/{i}", path) for i in range(2))
    units = lstm["forward"][1].shape[0]
    model = BiLSTMClassifier(emb.shape[0], emb.shape[1], units, dense_w.shape[1], head_w.shape[1])
    tensors = {
        "embedding.weight": emb,
        "dense.weight": dense_w.T,
        "dense.bias": dense_b,
        "head.weight": head_w.T,
        "head.bias": head_b,
    }
    for side, suffix in (("forward", ""), ("backward", "_reverse")):
        kernel, recurrent, bias = lstm[side]
        tensors[f"lstm.weight_ih_l0{suffix}"] = kernel.T
        tensors[f"lstm.weight_hh_l0{suffix}"] = recurrent.T
        tensors[f"lstm.bias_ih_l0{suffix}"] = bias
        tensors[f"lstm.bias_hh_l0{suffix}"] = np.zeros_like(bias)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SafealignError(f"{path}: weight shapes do not fit the BiLSTM architecture ({exc})") from exc
    return model.eval()


class JigsawBiLSTMScorer(ToxicityScorer):
    """Offline toxicity scorer: the packaged Keras BiLSTM ported to torch (six Jigsaw labels).

    ``score()`` returns the ``toxicity`` label (Jigsaw's ``toxic``); all six are in ``score_labels()``,
    named as detoxify names them.
    """

    name = "jigsaw-bilstm"
    labels = LABELS
    default_batch_size = 64

    def __init__(
        self, model_dir: str | Path | None = None, device: str | None = None, label: str | None = None
    ):
        super().__init__()
        if model_dir is None:
            from alignment.models import packaged_path

            model_dir = packaged_path("jigsaw-bilstm")
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise SafealignError(f"{model_dir}: jigsaw-bilstm model directory not found")
        self.tokenizer = load_keras_tokenizer(model_dir / TOKENIZER_FILE)
        self.model = load_bilstm_weights(model_dir / WEIGHTS_FILE)
        if self.model.embedding.num_embeddings != (self.tokenizer.num_words or 0):
            raise SafealignError(
                f"{model_dir}: tokenizer keeps {self.tokenizer.num_words} words but the embedding has "
                f"{self.model.embedding.num_embeddings} rows; the two files do not belong together"
            )
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.primary = pick_label(self.labels, label or "toxicity", self.name)
        self.info = {"backend": self.name, "model_dir": str(model_dir), "label": self.primary}

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Word ids ``(batch, 100)`` exactly as the original model receives them."""
        return torch.from_numpy(pad_pre(self.tokenizer.texts_to_sequences(texts), MAXLEN))

    @torch.inference_mode()
    def _predict(self, texts: list[str]) -> np.ndarray:
        return self.model(self.encode(texts).to(self.device)).float().cpu().numpy()
