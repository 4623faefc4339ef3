"""Our progress display: one line per stage with its elapsed time.

On a terminal a rich live display (spinner while a stage runs, its current step, e.g.
``calibrate 12/32`` or ``validate (c) held-out``, then a check mark and the time); elsewhere (CI,
pipes) one plain line per finished stage. Deep code reports a step without being handed the
object: ``progress.note("(b) test vectors")`` reaches the active display (no-op when none).
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import IO

_current: list["Progress"] = []


class Progress:
    def __init__(self, enabled: bool | None = None, file: IO[str] | None = None, prefix: str = ""):
        self.file = file if file is not None else sys.stderr
        self.enabled = bool(enabled if enabled is not None else True)
        self.prefix = prefix
        self.timings: dict[str, float] = {}
        self._live = None
        self._task = None
        if self.enabled and self.file.isatty():
            from rich.console import Console
            from rich.progress import Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = RichProgress(SpinnerColumn(finished_text="[green]✓[/green]"),
                                      TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=Console(file=self.file), transient=False)

    def _label(self, name: str) -> str:
        return f"[{self.prefix}] {name}" if self.prefix else name

    @contextlib.contextmanager
    def stage(self, name: str):
        from slmpack.staging import raise_if_interrupted

        raise_if_interrupted()  # a stop signal whose exception a finalizer or library swallowed
        t0 = time.perf_counter()
        ok = False
        _current.append(self)
        if self._live is not None:
            if not self._live.live.is_started:
                self._live.start()
            self._task = self._live.add_task(self._label(name), total=1)
        try:
            yield
            raise_if_interrupted()
            ok = True
        finally:
            _current.pop()
            dt = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + dt
            if self._live is not None:
                self._live.update(self._task, description=self._label(name), completed=1)
                self._task = None
            elif self.enabled:
                print(f"{self._label(name)}{'' if ok else ' failed'} {dt:.1f}s", file=self.file, flush=True)

    def note(self, step: str) -> None:
        """The running stage's current step (shown live on a terminal; not printed on plain output)."""
        if self._live is not None and self._task is not None:
            desc = self._live.tasks[[t.id for t in self._live.tasks].index(self._task)].description
            self._live.update(self._task, description=f"{desc.split(' · ')[0]} · {step}")

    def close(self) -> None:
        if self._live is not None and self._live.live.is_started:
            self._live.stop()


def note(step: str) -> None:
    """Report a step of the running stage to the active display, if any."""
    if _current:
        _current[-1].note(step)


QUIET = Progress(enabled=False)
