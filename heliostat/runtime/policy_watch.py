"""Follows the policy file: a valid new version goes live, an invalid one is refused.

Polling the file's bytes (not mtime alone) is portable, catches editors that replace files
atomically, and costs one small read a second. The last good policy keeps being served
whatever is written into the file, and whatever goes wrong while reading or applying it: a
reload that fails in any way is logged once with its cause, counted, and the watcher goes on
watching. Reading and validating run in a worker thread, so a large policy does not hold up
the xDS streams served from the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import structlog

from heliostat.policy import Policy, PolicyError, parse_policy
from heliostat.policy.loader import read_policy_bytes

log = structlog.get_logger("heliostat.policy")


class Outcome(StrEnum):
    """What became of one new version of the file (a metric label, keep stable)."""

    APPLIED = "applied"
    REJECTED = "rejected"  # not a valid policy: its problems are logged
    FAILED = "failed"  # reading, validating or applying it raised: a bug or the machine


@dataclass(frozen=True)
class _Read:
    """What one look at the file found; worked out in a thread, acted on in the loop."""

    digest: str | None = None  # None: the file could not be read (see `problems`)
    policy: Policy | None = None
    problems: list[str] = field(default_factory=list)
    failure: Exception | None = None  # validating raised something else than a PolicyError


class PolicyWatcher:
    def __init__(
        self,
        path: Path,
        on_change: Callable[[Policy], None],
        *,
        interval: float = 1.0,
        initial_digest: str | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.path = path
        self._on_change = on_change
        self._on_outcome = on_outcome
        self._interval = interval
        self._digest = initial_digest
        self._last_failure: tuple[str | None, str] | None = None
        self.last_error: list[str] | None = None
        self.reloads = 0
        self.rejections = 0
        self.failures = 0

    def check(self) -> bool:
        """Read the file once; apply it if it changed and is valid. True if applied.

        Never raises: every failure is logged, counted and kept in `last_error`.
        """
        try:
            found = self._read()
        except Exception as exc:
            self._failed("reading", exc)
            return False
        return self._settle(found)

    async def poll(self) -> bool:
        """`check`, with reading and validation in a worker thread."""
        try:
            found = await asyncio.to_thread(self._read)
        except Exception as exc:
            self._failed("reading", exc)
            return False
        return self._settle(found)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()

    # -- steps -------------------------------------------------------------------------

    def _read(self) -> _Read | None:
        """The file's new version, validated; None when it did not change. No side effects:
        it runs in a worker thread."""
        try:
            data = read_policy_bytes(self.path)
        except PolicyError as exc:
            return _Read(problems=exc.lines())
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        try:
            policy = parse_policy(data.decode("utf-8", errors="replace"), str(self.path))
        except PolicyError as exc:
            return _Read(digest, problems=exc.lines())
        except Exception as exc:  # a bug, or the machine: the watcher itself goes on
            return _Read(digest, failure=exc)
        return _Read(digest, policy)

    def _settle(self, found: _Read | None) -> bool:
        if found is None:
            return False
        if found.digest is None:
            if self.last_error != found.problems:
                self.last_error = found.problems
                log.error(
                    "policy_unreadable",
                    detail="keeping the last good policy",
                    path=str(self.path),
                    error=found.problems[0],
                )
            return False
        # Recorded whatever follows: a version that fails is reported once, not every poll.
        self._digest = found.digest
        if found.failure is not None:
            self._failed("validating", found.failure)
            return False
        if found.policy is None:
            self.rejections += 1
            self.last_error = found.problems
            for line in found.problems:
                log.error("policy_rejected", problem=line, detail="keeping the last good policy")
            self._report(Outcome.REJECTED)
            return False
        return self._apply(found.policy)

    def _apply(self, policy: Policy) -> bool:
        try:
            self._on_change(policy)
        except Exception as exc:
            self._failed("applying", exc)
            return False
        self._last_failure = None
        self.last_error = None
        self.reloads += 1
        log.info("policy_applied", path=str(self.path), name=policy.metadata.name)
        self._report(Outcome.APPLIED)
        return True

    def _failed(self, stage: str, exc: Exception) -> None:
        cause = f"{stage} the policy failed: {type(exc).__name__}: {exc}"[:500]
        if (self._digest, cause) == self._last_failure:
            return  # the same failure of the same file on the next poll: told and counted
        self._last_failure = (self._digest, cause)
        self.failures += 1
        self.last_error = [f"{self.path}: {cause}"]
        log.error(
            "policy_reload_failed",
            detail="keeping the last good policy",
            path=str(self.path),
            error=cause,
        )
        self._report(Outcome.FAILED)

    def _report(self, outcome: Outcome) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def digest_of(path: Path) -> str:
    return hashlib.sha256(read_policy_bytes(path)).hexdigest()
