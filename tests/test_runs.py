"""Run directories, manifests and atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from alignment.errors import SafealignError
from alignment.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_file, sha256_json
from alignment.runs import finish_run, load_manifest, run_context, start_run


def test_manifest_records_what_ran(tmp_path):
    run = start_run("exp1", command=["safealign", "x"], config={"lr": 0.1}, seed=7, root=tmp_path)
    manifest = json.loads((tmp_path / "exp1" / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["seed"] == 7
    assert manifest["config"] == {"lr": 0.1} and manifest["command"] == ["safealign", "x"]
    assert {"python", "torch", "transformers", "trl", "safealign"} <= set(manifest["versions"])
    assert manifest["device"]["device"] in {"cpu", "cuda", "mps"}
    assert manifest["started_at"] and manifest["ended_at"] is None
    run.update(backends={"toxicity": "jigsaw-bilstm"})
    run.update(backends={"stereotype": "minilm"})
    done = finish_run(run)
    on_disk = load_manifest(tmp_path / "exp1")
    assert on_disk == done
    assert on_disk["status"] == "completed" and on_disk["wall_time_s"] >= 0
    assert on_disk["backends"] == {"toxicity": "jigsaw-bilstm", "stereotype": "minilm"}


def test_failures_and_interrupts_are_recorded_and_history_kept(tmp_path):
    with pytest.raises(RuntimeError), run_context("exp", root=tmp_path):
        raise RuntimeError("boom")
    assert load_manifest(tmp_path / "exp")["status"] == "failed"
    with pytest.raises(KeyboardInterrupt), run_context("exp", root=tmp_path):
        raise KeyboardInterrupt
    manifest = load_manifest(tmp_path / "exp")
    assert manifest["status"] == "interrupted"
    assert [p["status"] for p in manifest["previous_runs"]] == ["failed"]


def test_bad_run_names_and_manifests(tmp_path):
    with pytest.raises(SafealignError, match="not valid"):
        start_run("../escape", root=tmp_path)
    with pytest.raises(SafealignError, match="no manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(SafealignError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_atomic_file_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SafealignError, match=r"cannot write .*out.json: No space left on device"):
        atomic_write_text(target, "new")
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise ValueError
    assert (target / "a.txt").read_text() == "first"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_hashes(tmp_path):
    import hashlib

    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_json({"a": 1, "b": 2}) == sha256_json({"b": 2, "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
