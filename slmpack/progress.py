"""Per-stage progress on a terminal (stderr); silent when not a TTY or in --json mode."""
from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.timings: dict[str, float] = {}
        self._console = None
        if self.enabled:
            from rich.console import Console

            self._console = Console(stderr=True)

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        if self._console is None:
            yield
        else:
            with self._console.status(f"[bold]{name}[/bold] ..."):
                yield
        dt = time.perf_counter() - t0
        self.timings[name] = self.timings.get(name, 0.0) + dt
        if self._console is not None:
            self._console.print(f"[green]✓[/green] {name} [dim]{dt:.1f}s[/dim]")


QUIET = Progress(enabled=False)
