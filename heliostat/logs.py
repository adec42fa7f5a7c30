"""One log format for the whole process, structlog's and the standard library's loggers alike.

Every line is an event with a stable snake_case name (`push`, `nack`, `policy_rejected`,
`endpoint_state_changed`, ...) plus fields, so a log pipeline can select on `event` without
parsing prose. On a terminal the lines are readable columns; anywhere else (a file, a pipe,
a container runtime) they are JSON objects, one a line. Loggers of the standard library
(`logging.getLogger`, used by the signal scrapers and the simulator, and by libraries) go
through the same processors, so they get the same time stamp, level and format.

Secrets never reach a line: fields whose name says they hold one are masked here, whatever
the call site passed.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]
FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")

_SECRET_WORDS = ("token", "secret", "password", "authorization", "api_key", "apikey", "cookie")


def _mask_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> Literal["json", "console"]:
    """Route structlog and `logging` through one renderer on `stream` (stderr); returns the
    format chosen (`auto`: console on a terminal, JSON otherwise)."""
    chosen = resolve_format(fmt, stream if stream is not None else sys.stderr)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False, default=str)
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks without local variables: those may hold anything, secrets included.
            *(
                [
                    structlog.processors.ExceptionRenderer(
                        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
                    )
                ]
                if chosen == "json"
                else []
            ),
            renderer,
        ],
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # heliostat's own loggers follow the level set here: one muted before speaks again.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".", 1)[0] == "heliostat" and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
    # Libraries' chatter stays at WARNING whatever heliostat's own level is.
    for noisy in ("asyncio", "aiohttp", "grpc", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    return chosen


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the one it was made
    with: a replaced stderr (a test's capture, closed after it) must not leave a thread that
    logs later writing into a closed file ("I/O operation on closed file" in the suite)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """StreamHandler's own setters have nothing to keep: the stream is read each time."""
