"""Follows the policy file: a valid new version goes live, an invalid one is refused.

Polling the file's bytes (not mtime alone) is portable, catches editors that replace files
atomically, and costs one small read a second. The last good policy keeps being served
whatever is written into the file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import structlog

from heliostat.policy import Policy, PolicyError, parse_policy

log = structlog.get_logger("heliostat.policy")


class PolicyWatcher:
    def __init__(
        self,
        path: Path,
        on_change: Callable[[Policy], None],
        *,
        interval: float = 1.0,
        initial_digest: str | None = None,
    ) -> None:
        self.path = path
        self._on_change = on_change
        self._interval = interval
        self._digest = initial_digest
        self.last_error: list[str] | None = None
        self.reloads = 0
        self.rejections = 0

    def check(self) -> bool:
        """Read the file once; apply it if it changed and is valid. True if applied."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            if self.last_error != [f"{self.path}: {exc.strerror}"]:
                self.last_error = [f"{self.path}: {exc.strerror}"]
                log.error(
                    "policy file unreadable; keeping the last good policy",
                    path=str(self.path),
                    error=exc.strerror,
                )
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            policy = parse_policy(data.decode("utf-8", errors="replace"), str(self.path))
        except PolicyError as exc:
            self.rejections += 1
            self.last_error = exc.lines()
            for line in exc.lines():
                log.error("policy rejected; keeping the last good policy", problem=line)
            return False
        self.last_error = None
        self.reloads += 1
        log.info("policy applied", path=str(self.path), name=policy.metadata.name)
        self._on_change(policy)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
