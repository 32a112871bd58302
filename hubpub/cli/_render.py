"""Rendering the library's events: the only place hubpub draws progress.

In a terminal: a rich bar per long step (blocks tuned, modes run, evals, bytes uploaded).
Not a terminal (CI, nohup, tee): one line per finished item, and a heartbeat line at least once
a minute with the elapsed time and an ETA, so a log never goes quiet for 30 minutes.
Output of the libraries hubpub drives (AutoRound, transformers) arrives as ThirdPartyOutput and
is shown only with --verbose.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click

from ..events import Event, Notice, StageEvent, StepFinished, StepProgress, StepStarted, ThirdPartyOutput
from ..units import human_bytes, human_duration

HEARTBEAT_S = 60.0


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "?"
    return human_bytes(value) if unit == "B" else f"{value:g}"


class Renderer:
    """An EventSink that draws events; use as a context manager around the library call."""

    def __init__(self, *, verbose: bool = False, quiet: bool = False, tty: bool | None = None,
                 heartbeat_s: float = HEARTBEAT_S, on_stage: Any = None):
        self.verbose, self.quiet = verbose, quiet
        # the stream of the moment: a library call wrapped in capture_output swaps sys.stderr,
        # and hubpub's own lines (notices, warnings) must not vanish into that capture
        self._err = sys.stderr
        self.tty = self._err.isatty() if tty is None else tty
        self.heartbeat_s = heartbeat_s
        self.on_stage = on_stage  # callback for StageEvent (release prints its own stage lines)
        self._steps: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks: dict[tuple[str, str], Any] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._last_line = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "Renderer":
        if self.tty and not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(file=self._err), transient=True,
            )
            self._progress.start()
        elif not self.quiet:
            self._beat = threading.Thread(target=self._heartbeat, name="hubpub-heartbeat", daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- output --------------------------------------------------------------------------
    def line(self, text: str) -> None:
        with self._lock:
            self._last_line = time.monotonic()
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                click.echo(text, file=self._err)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageEvent):
            if self.on_stage is not None:
                self.on_stage(event)
            return
        if isinstance(event, ThirdPartyOutput):
            if self.verbose:
                self.line(f"  [{event.source}] {event.text}")
            return
        if isinstance(event, Notice):
            if not self.quiet or event.level == "warning":
                self.line(("warning: " if event.level == "warning" else "") + event.message)
            return
        if self.quiet:
            return
        key = (event.stage, event.step)
        if isinstance(event, StepStarted):
            self._steps[key] = {"started": time.monotonic(), "done": 0.0, "total": event.total, "unit": event.unit}
            if self._progress is not None:
                self._tasks[key] = self._progress.add_task(f"{event.stage}: {event.step}", total=event.total)
            else:
                self.line(f"{event.stage}: {event.step} started" + (f" ({_amount(event.total, event.unit)} {event.unit or 'steps'})" if event.total else ""))
        elif isinstance(event, StepProgress):
            info = self._steps.setdefault(key, {"started": time.monotonic(), "done": 0.0, "total": event.total, "unit": ""})
            info["done"], info["total"] = event.done, event.total if event.total is not None else info["total"]
            if self._progress is not None and key in self._tasks:
                self._progress.update(self._tasks[key], completed=event.done, total=info["total"])
            elif self._progress is None:
                of = f"/{_amount(info['total'], info['unit'])}" if info["total"] else ""
                what = f" {event.item}" if event.item else ""
                self.line(f"{event.stage}: {event.step} {_amount(event.done, info['unit'])}{of}{what} ({self._eta(info)})")
        elif isinstance(event, StepFinished):
            self._steps.pop(key, None)
            if self._progress is not None and key in self._tasks:
                self._progress.remove_task(self._tasks.pop(key))
            elif self._progress is None:
                self.line(f"{event.stage}: {event.step} done in {human_duration(event.seconds)}")

    @staticmethod
    def _eta(info: dict[str, Any]) -> str:
        elapsed = time.monotonic() - info["started"]
        text = f"elapsed {human_duration(elapsed)}"
        done, total = info.get("done") or 0, info.get("total")
        if total and done:
            text += f", ETA {human_duration(elapsed / done * max(total - done, 0))}"
        return text

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.heartbeat_s, 5.0)):
            if time.monotonic() - self._last_line < self.heartbeat_s:
                continue
            with self._lock:
                steps = list(self._steps.items())
            if steps:
                (stage, name), info = steps[-1]
                self.line(f"{stage}: {name} still running ({self._eta(info)})")
            else:
                self.line("still working...")
