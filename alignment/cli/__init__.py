"""The ``safealign`` command: one subcommand per module listed in :data:`COMMANDS`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a
callable taking the parsed namespace and returning an exit code). Errors of type
:class:`~alignment.errors.SafealignError` print one line and exit with code 2, and so does a full disk
met outside safealign's own atomic writes (a library's checkpoint or cache).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from alignment import __version__
from alignment.errors import SafealignError
from alignment.io import out_of_space

COMMANDS = (
    "alignment.cli.env_cmd",
    "alignment.cli.models_cmd",
    "alignment.cli.generate_cmd",
    "alignment.cli.train_cmd",
    "alignment.cli.data_cmd",
    "alignment.cli.pipeline_cmd",
    "alignment.cli.results_cmd",
    "alignment.cli.reward_cmd",
    "alignment.cli.eval_cmd",
    "alignment.cli.export_cmd",
    "alignment.cli.compare_cmd",
)

DESCRIPTION = """\
safealign: make language models less socially biased and less toxic without making them
forget what they know, and prove both with numbers.

Model specs accept a built-in alias (see `safealign models list`), a local checkpoint or PEFT
adapter directory, or a Hugging Face hub id (needs the hub, or a local HF cache when offline).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safealign", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"safealign {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def fail(message: str, code: int = 2) -> int:
    """Print one error line on stderr and return ``code``."""
    print(f"safealign: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    parser = build_parser()
    previous = _on_sigterm(_terminate)
    try:
        args = parser.parse_args(argv)  # an option's own check (``Once``) raises SafealignError
        return int(args.func(args) or 0)
    except SafealignError as exc:
        return fail(str(exc), exc.exit_code)
    except Terminated:
        return fail("interrupted (SIGTERM); a training run continues with --resume", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        return fail("interrupted; a training run continues with --resume", 130)
    except Exception as exc:
        if not out_of_space(exc):
            raise
        return fail(f"out of disk space: {exc}; free some space and run again (finished work is kept)")
    finally:
        _on_sigterm(previous)
        close_process_group()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler cancelling): unwinds like Ctrl-C, so every run records ``interrupted``,
    keeps its complete checkpoints and can be resumed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _on_sigterm(handler: object) -> object:
    """Install a SIGTERM handler (main thread only: elsewhere Python cannot) and return the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def close_process_group() -> None:
    """Leave a torch.distributed group before exit: a worker that exits while gloo's threads still run
    aborts ("terminate called without an active exception"), and torchrun reports the run as failed."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
