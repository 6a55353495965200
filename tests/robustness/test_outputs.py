"""Outputs are never lost: a folder is replaced only by a run of its own kind (or with --force), a run
directory is locked while a command writes it, and written files follow the user's umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from alignment.errors import SafealignError
from alignment.runs import LOCK_FILE, claim_output_dir, lock_run_dir, run_context


def test_claim_refuses_foreign_folders_and_files_unless_forced(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(SafealignError, match=r"holds files safealign did not write .*--force"):
        claim_output_dir(foreign, "eval")
    claim_output_dir(foreign, "eval", force=True)
    claim_output_dir(tmp_path / "absent", "eval")
    (tmp_path / "empty").mkdir()
    claim_output_dir(tmp_path / "empty", "eval")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SafealignError, match="is a file, not a folder"):
        claim_output_dir(tmp_path / "file", "eval", force=True)


def test_claim_accepts_its_own_kind_and_refuses_another(tmp_path):
    with run_context("ev", root=tmp_path, kind="eval"):
        pass
    claim_output_dir(tmp_path / "ev", "eval")
    with pytest.raises(SafealignError, match=r"holds a 'eval' run, not a 'pipeline' run"):
        claim_output_dir(tmp_path / "ev", "pipeline")
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["host"]["pid"] == os.getpid()


def test_lock_names_its_holder_and_is_released(tmp_path):
    run_dir = tmp_path / "run"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from alignment.runs import lock_run_dir
        with lock_run_dir({str(run_dir)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(SafealignError, match=rf"run is in use by process {proc.pid} on .*wait for it"):
            with lock_run_dir(run_dir):
                pass
    finally:
        proc.communicate("done\n", timeout=60)
    assert not run_dir.exists()  # the holder created the folder and left it empty: removed again
    with lock_run_dir(run_dir):
        with lock_run_dir(run_dir):  # re-entrant within one process
            assert (run_dir / LOCK_FILE).is_file()
        (run_dir / "result.txt").write_text("kept")
    assert sorted(p.name for p in run_dir.iterdir()) == ["result.txt"]


def test_lock_held_by_a_killed_process_is_free_again(tmp_path):
    run_dir = tmp_path / "run"
    code = (
        "import os\nfrom alignment.runs import lock_run_dir\n"
        f"with lock_run_dir({str(run_dir)!r}): os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9
    assert (run_dir / LOCK_FILE).is_file()  # left behind by the kill, but no longer locked
    with lock_run_dir(run_dir):
        pass
    claim_output_dir(run_dir, "eval")  # a stale lock file alone does not make the folder foreign


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    from alignment.io import atomic_dir, atomic_write_text

    old = os.umask(umask)
    try:
        file = atomic_write_text(tmp_path / "out" / "a.txt", "x")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    assert file.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_second_training_into_a_locked_run_directory_stops_naming_the_holder(cli, tmp_path):
    from stages_support import write_sft

    data = write_sft(tmp_path / "sft", train=4, test=2)
    run_dir = tmp_path / "run"
    holder = f"from alignment.runs import lock_run_dir\nwith lock_run_dir({str(run_dir)!r}):\n"
    holder += "    print('locked', flush=True)\n    input()\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        result = cli(
            "train", "sft", "--model", "tiny-random", "--dataset", data, "--max_steps", "1",
            "--output_dir", run_dir,
        )  # fmt: skip
    finally:
        proc.communicate("done\n", timeout=60)
    lines = [line for line in result.err.splitlines() if line.startswith("safealign:")]
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, result.err[-2000:]
    assert f"run is in use by process {proc.pid}" in lines[0] and "-c" in lines[0]
    assert not run_dir.exists()


def test_an_output_folder_that_cannot_be_created_is_one_line(cli, tmp_path, monkeypatch):
    """A read-only mount (EROFS; tests run as root, so a chmod would not stop them)."""
    import errno
    from pathlib import Path

    from stages_support import write_sft

    data = write_sft(tmp_path / "sft", train=4, test=2)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "mnt")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = cli(
        "train", "sft", "--model", "tiny-random", "--dataset", data, "--max_steps", "1",
        "--output_dir", tmp_path / "mnt" / "run",
    )  # fmt: skip
    lines = [line for line in result.err.splitlines() if line.startswith("safealign:")]
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, result.err[-2000:]
    assert "cannot create run directory" in lines[0] and "Read-only file system" in lines[0]


def test_a_training_run_is_not_replaced_by_an_evaluation(cli, tmp_path, tiny_model):
    from corpus import snapshot
    from stages_support import write_sft

    data = write_sft(tmp_path / "sft", train=4, test=2)
    run_dir = tmp_path / "run"
    done = cli(
        "train",
        "sft",
        "--model",
        "tiny-random",
        "--dataset",
        data,
        "--max_steps",
        "1",
        "--output_dir",
        run_dir,
    )
    assert done.code == 0, done.err[-2000:]
    assert json.loads((run_dir / "manifest.json").read_text())["kind"] == "train-sft"
    before = snapshot(run_dir)
    result = cli("eval", "--model", tiny_model, "--suites", "crows_pairs", "--out", run_dir)
    assert result.code == 2 and "holds a 'train-sft' run, not a 'eval' run" in result.err, result.err[-2000:]
    assert snapshot(run_dir) == before
