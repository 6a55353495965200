"""Rich consoles shared by commands: tables and progress on stderr, results on stdout."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
