"""Rich consoles for every module that prints: tables and progress on stderr, results on stdout."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
