"""The events stages emit while they work. The library never prints: it calls ``events(event)``.

Every stage function takes ``events: EventSink | None``; ``hubpub/cli`` renders the events
(rich bars in a terminal, one line per step plus a heartbeat in a log). Tests collect them in a
list. An event is a small frozen dataclass; add a field rather than a new kind when you can.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Union


@dataclass(frozen=True)
class StepStarted:
    """A long step begins (tuning blocks, running modes, an eval, uploading bytes)."""

    stage: str
    step: str  # "quantize blocks", "modes (base)", "eval perplexity", "upload"
    total: float | None = None  # units of work, if known
    unit: str = ""  # "block", "mode", "B", ...


@dataclass(frozen=True)
class StepProgress:
    """``done`` units of ``step`` are finished (absolute, not an increment)."""

    stage: str
    step: str
    done: float
    total: float | None = None
    item: str = ""  # what just finished: a block name, a mode name


@dataclass(frozen=True)
class StepFinished:
    stage: str
    step: str
    seconds: float


@dataclass(frozen=True)
class Notice:
    """Something the user should read: a warning hubpub raises, or a fact worth a line."""

    stage: str
    message: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class ThirdPartyOutput:
    """A line a library printed or logged (AutoRound, transformers): shown only with --verbose."""

    stage: str
    source: str  # "auto_round", "transformers", "stderr", "warnings"
    text: str


@dataclass(frozen=True)
class StageEvent:
    """release: a stage is running / ran / cached / skipped / would run."""

    stage: str
    status: str
    reason: str = ""
    seconds: float = 0.0


Event = Union[StepStarted, StepProgress, StepFinished, Notice, ThirdPartyOutput, StageEvent]
EventSink = Callable[[Event], None]


def emit(events: EventSink | None, event: Event) -> None:
    if events is not None:
        events(event)


@dataclass
class Step:
    """``with step(events, stage, "modes", total=6) as s: ... s.advance(item=name)``."""

    events: EventSink | None
    stage: str
    name: str
    total: float | None = None
    unit: str = ""
    done: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def advance(self, amount: float = 1.0, *, item: str = "") -> None:
        self.done += amount
        emit(self.events, StepProgress(self.stage, self.name, self.done, self.total, item))

    def set(self, done: float, *, item: str = "") -> None:
        self.done = done
        emit(self.events, StepProgress(self.stage, self.name, self.done, self.total, item))


@contextlib.contextmanager
def step(events: EventSink | None, stage: str, name: str, *, total: float | None = None, unit: str = "") -> Iterator[Step]:
    emit(events, StepStarted(stage, name, total, unit))
    current = Step(events, stage, name, total, unit)
    try:
        yield current
    finally:
        emit(events, StepFinished(stage, name, time.perf_counter() - current.started))


class _LineWriter:
    """A file-like object that turns writes into ThirdPartyOutput events, one per line."""

    def __init__(self, events: EventSink | None, stage: str, source: str):
        self.events, self.stage, self.source, self._buf = events, stage, source, ""

    def write(self, text: str) -> int:
        self._buf += text.replace("\r", "\n")
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                emit(self.events, ThirdPartyOutput(self.stage, self.source, line.rstrip()))
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            emit(self.events, ThirdPartyOutput(self.stage, self.source, self._buf.rstrip()))
        self._buf = ""

    def isatty(self) -> bool:
        return False


class _ToEvents(logging.Handler):
    def __init__(self, events: EventSink | None, stage: str):
        super().__init__()
        self.events, self.stage = events, stage

    def emit(self, record: logging.LogRecord) -> None:  # noqa: A003 - logging's name
        try:
            text = record.getMessage()
        except Exception:  # a library's malformed log call is not our failure
            text = str(record.msg)
        emit(self.events, ThirdPartyOutput(self.stage, record.name.split(".")[0], text))


# loggers of the libraries a stage drives; their records become ThirdPartyOutput events
LIBRARY_LOGGERS = ("auto_round", "autoround", "transformers", "accelerate", "datasets", "lm_eval", "huggingface_hub", "torch")


@contextlib.contextmanager
def capture_output(events: EventSink | None, stage: str, *, loggers: tuple[str, ...] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Route what libraries print (stdout/stderr, logging, warnings, tqdm) into events.

    Used around calls into AutoRound / transformers / lm-eval so their bars and warnings do not
    leak into hubpub's own output; ``--verbose`` renders the ThirdPartyOutput events raw.
    """
    out, err = _LineWriter(events, stage, "stdout"), _LineWriter(events, stage, "stderr")
    handler = _ToEvents(events, stage)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    old_showwarning = warnings.showwarning

    def showwarning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        emit(events, ThirdPartyOutput(stage, "warnings", f"{category.__name__}: {message}"))

    warnings.showwarning = showwarning
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        out.flush()
        err.flush()
        warnings.showwarning = old_showwarning
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
