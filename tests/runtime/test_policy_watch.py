"""The policy watcher survives whatever a reload does: rejected, unreadable, or raising."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from heliostat.policy import Policy
from heliostat.runtime import policy_watch
from heliostat.runtime.policy_watch import Outcome, PolicyWatcher, digest_of

REPO = Path(__file__).resolve().parents[2]
DEMO = (REPO / "policies" / "demo.yaml").read_text()


def renamed(name: str) -> str:
    assert DEMO.count("metadata: {name: demo}") == 1
    return DEMO.replace("metadata: {name: demo}", f"metadata: {{name: {name}}}")


class Recorder:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.outcomes: list[Outcome] = []
        self.fail_next = False

    def apply(self, policy: Policy) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the control loop could not take it")
        self.applied.append(policy.metadata.name)


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, PolicyWatcher, Recorder]:
    path = tmp_path / "policy.yaml"
    path.write_text(DEMO)
    recorder = Recorder()
    watcher = PolicyWatcher(
        path,
        recorder.apply,
        initial_digest=digest_of(path),
        on_outcome=recorder.outcomes.append,
    )
    return path, watcher, recorder


def errors(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["log_level"] == "error"]


def test_an_unchanged_file_is_not_applied_again(
    watched: tuple[Path, PolicyWatcher, Recorder],
) -> None:
    _path, watcher, recorder = watched
    assert watcher.check() is False
    assert recorder.applied == [] and recorder.outcomes == []


def test_a_valid_edit_is_applied(watched: tuple[Path, PolicyWatcher, Recorder]) -> None:
    path, watcher, recorder = watched
    path.write_text(renamed("second"))
    assert watcher.check() is True
    assert recorder.applied == ["second"]
    assert recorder.outcomes == [Outcome.APPLIED]
    assert watcher.reloads == 1 and watcher.last_error is None


def test_a_hostile_file_is_rejected_once_and_the_next_good_one_applied(
    watched: tuple[Path, PolicyWatcher, Recorder],
) -> None:
    path, watcher, recorder = watched
    path.write_text("spec: " + "[" * 100_000 + "\n")
    with capture_logs() as logs:
        assert watcher.check() is False
        assert watcher.check() is False  # the same bytes: not read as new again
    assert [e["problem"] for e in errors(logs)] == [
        f"{path}:1: (document): invalid YAML: nested deeper than 32 levels; a policy needs far "
        "fewer"
    ]
    assert watcher.rejections == 1 and recorder.outcomes == [Outcome.REJECTED]
    path.write_text(renamed("after"))
    assert watcher.check() is True
    assert recorder.applied == ["after"]


def test_a_reload_that_raises_is_logged_once_counted_and_watching_goes_on(
    watched: tuple[Path, PolicyWatcher, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever validation raises (here the RecursionError the old YAML walker raised on deep
    files), the watcher keeps the last good policy and applies the next good version."""
    path, watcher, recorder = watched
    real = policy_watch.parse_policy

    def explode(text: str, source: str) -> Policy:
        if "boom" in text:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text, source)

    monkeypatch.setattr(policy_watch, "parse_policy", explode)
    path.write_text(renamed("boom"))
    with capture_logs() as logs:
        assert watcher.check() is False
        assert watcher.check() is False
    (logged,) = errors(logs)
    assert logged["event"] == "policy_reload_failed"
    assert logged["error"] == (
        "validating the policy failed: RecursionError: maximum recursion depth exceeded"
    )
    assert watcher.failures == 1
    assert watcher.last_error == [f"{path}: {logged['error']}"]
    assert recorder.outcomes == [Outcome.FAILED]
    path.write_text(renamed("fine"))
    assert watcher.check() is True
    assert recorder.applied == ["fine"] and watcher.last_error is None


def test_applying_that_raises_is_a_failure_not_a_crash(
    watched: tuple[Path, PolicyWatcher, Recorder],
) -> None:
    path, watcher, recorder = watched
    recorder.fail_next = True
    path.write_text(renamed("refused"))
    with capture_logs() as logs:
        assert watcher.check() is False
    (logged,) = errors(logs)
    assert (
        logged["error"]
        == "applying the policy failed: RuntimeError: the control loop could not take it"
    )
    assert watcher.failures == 1 and watcher.reloads == 0
    path.write_text(renamed("accepted"))
    assert watcher.check() is True
    assert recorder.applied == ["accepted"]
    assert recorder.outcomes == [Outcome.FAILED, Outcome.APPLIED]


def test_an_unreadable_file_is_reported_once(watched: tuple[Path, PolicyWatcher, Recorder]) -> None:
    path, watcher, recorder = watched
    path.unlink()
    path.mkdir()
    with capture_logs() as logs:
        assert watcher.check() is False
        assert watcher.check() is False
    (logged,) = errors(logs)
    assert logged["error"] == f"{path}:1: (document): cannot read policy file: Is a directory"
    assert recorder.outcomes == []


def test_a_file_over_the_size_limit_is_unreadable(
    watched: tuple[Path, PolicyWatcher, Recorder],
) -> None:
    path, watcher, _recorder = watched
    path.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    assert watcher.check() is False
    assert watcher.last_error is not None and "larger than 4 MiB" in watcher.last_error[0]


async def test_polling_reads_in_a_thread_and_never_raises(
    watched: tuple[Path, PolicyWatcher, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, watcher, recorder = watched

    def broken(_path: object) -> bytes:
        raise MemoryError("no more")

    monkeypatch.setattr(policy_watch, "read_policy_bytes", broken)
    assert await watcher.poll() is False
    assert watcher.failures == 1
    monkeypatch.undo()
    path.write_text(renamed("polled"))
    assert await watcher.poll() is True
    assert recorder.applied == ["polled"]


async def test_run_keeps_watching_after_failures(
    watched: tuple[Path, PolicyWatcher, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _watcher, recorder = watched
    watcher = PolicyWatcher(path, recorder.apply, interval=0.01, initial_digest=digest_of(path))
    calls = 0
    real = policy_watch.parse_policy

    def flaky(text: str, source: str) -> Policy:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug")
        return real(text, source)

    monkeypatch.setattr(policy_watch, "parse_policy", flaky)
    task = asyncio.create_task(watcher.run())
    try:
        path.write_text(renamed("first"))
        while watcher.failures == 0:
            await asyncio.sleep(0.01)
        path.write_text(renamed("second"))
        while not recorder.applied:
            await asyncio.sleep(0.01)
        assert not task.done()
    finally:
        task.cancel()
    assert recorder.applied == ["second"]
