"""The live terminal view (rich): the only module of heliostat that imports rich.

It draws a `board.Board` three to four times a second from rich's own refresh thread, so
the runner's main thread can block (a fleet restart takes a second or two) without the
picture freezing. What it shows is only what was measured: queue, running and KV use as
heliostat scraped them, weights and health as each region's own Envoy has them, and where
requests went as the replicas counted them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from heliostat.demo.board import RECENT, Board, RegionPanel, ReplicaRow
from heliostat.demo.judge import Verdict
from heliostat.demo.observe import Reason
from heliostat.demo.outcome import Outcome
from heliostat.demo.report import closing
from heliostat.demo.story import SLOTS, Phase, Story

REFRESH_PER_SECOND = 3
LOG_LINES = 4


class LiveObserver:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._live: Live | None = None
        self._board: Callable[[], Board] | None = None
        self._log: list[str] = []

    def __enter__(self) -> LiveObserver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def status(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def begin(self, story: Story, describe: str, board: Callable[[], Board]) -> None:
        self.console.print(Text(describe, style="dim"))
        self._board = board
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=False,
        )
        self._live.start()

    def phase(self, index: int, phase: Phase, story: Story) -> None:
        self._log.append(f"[{phase.start:5.1f}s] phase {index + 1}: {phase.title}")

    def event(self, t: float, text: str) -> None:
        self._log.append(f"[{t:5.1f}s] {text}")

    def verdict(self, t: float, verdict: Verdict) -> None:
        result = "ok" if verdict.ok else "FAIL"
        self._log.append(f"[{t:5.1f}s] {verdict.name} judged: {result}")

    def end(self, outcome: Outcome) -> None:
        self._stop()
        self.console.print(summary_table(outcome))
        self.console.print(closing(outcome))

    def _render(self) -> RenderableType:
        if self._board is None:
            return Text("starting...")
        try:
            return render(self._board(), self._log[-LOG_LINES:])
        except Exception as exc:  # a bad frame must not kill the refresh thread
            return Text(f"(view error: {exc!r})", style="red")


def summary_table(outcome: Outcome) -> Table:
    table = Table(title="heliostat demo: the verdicts", box=box.SIMPLE_HEAD, expand=True)
    table.add_column("phase", style="bold", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail (measured)", ratio=1)
    for v in outcome.verdicts:
        table.add_row(v.name, _result(v.ok), v.detail)
    return table


def _result(ok: bool) -> Text:
    return Text("ok", style="bold green") if ok else Text("FAIL", style="bold red")


def render(board: Board, log: list[str]) -> RenderableType:
    return Group(
        _header(board),
        _replicas(board),
        _gateways(board),
        _footer(board, log),
    )


def _header(board: Board) -> RenderableType:
    story, phase = board.story, board.phase
    title = Text("heliostat demo", style="bold yellow")
    if phase is None:
        title.append(f"  story over ({board.t:.0f} s); judging the last phase...", style="bold")
        return title
    index = story.phases.index(phase)
    title.append(f"  phase {index + 1}/{len(story.phases)}: ", style="bold")
    title.append(phase.title, style="bold cyan")
    title.append(f"   {board.remaining:4.0f} s left", style="bold")
    timeline = Text("  ")
    for p in story.phases:
        style = "reverse cyan" if p is phase else ("green" if p.end <= board.t else "dim")
        timeline.append(f" {p.name} ", style=style)
        timeline.append(" ")
    timeline.append(f"t={board.t:5.1f}s of {story.duration:.0f}s", style="dim")
    watch = Text("  watch: ", style="bold")
    watch.append(phase.watch, style="italic")
    return Group(title, timeline, watch)


def _replicas(board: Board) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title="replicas: signals as heliostat scraped them; weight in the region's own Envoy",
        title_justify="left",
        title_style="dim",
        pad_edge=False,
        collapse_padding=True,
    )
    # Every column keeps its width on a narrow terminal but the last, the explanation.
    for name, width in (
        ("region", 12),
        ("replica", 6),
        ("state", 10),
        ("queue", 5),
        ("running", 7),
        ("KV", 4),
        ("weight", 6),
        ("req/s", 5),
    ):
        justify = "left" if width >= 10 or name == "replica" else "right"
        table.add_column(name, justify=justify, no_wrap=True, min_width=width)  # type: ignore[arg-type]
    table.add_column("why (heliostat)", no_wrap=True, overflow="ellipsis")
    for panel in board.panels:
        for i, row in enumerate(panel.replicas):
            last = i == len(panel.replicas) - 1
            region = Text(panel.region, style="bold") if i == 0 else Text("")
            table.add_row(region, *_replica_cells(row), end_section=last)
    return table


def _replica_cells(row: ReplicaRow) -> list[Text]:
    port = Text(":" + row.address.rsplit(":", 1)[-1])
    flags = _flags(row.health)
    if not row.up:
        state = Text("DOWN" + (f" {flags}" if flags else ""), style="bold red")
    elif not flags:
        state = Text("up", style="green")
    else:
        state = Text(f"up {flags}", style="yellow")
    return [
        port,
        state,
        _num(row.waiting, warn=2, bad=4),
        Text("-" if row.running is None else f"{row.running:.0f}/{SLOTS}"),
        _kv(row.kv),
        _weight(row.weight),
        Text(f"{row.rps:4.1f}" if row.up else "-"),
        _why(row.reason),
    ]


_FLAGS = {
    "failed_outlier_check": "ejected",
    "failed_eds_health": "unhealthy",
    "degraded_eds_health": "degraded",
    "eds_status_draining": "draining",
    "failed_active_hc": "hc failed",
    "pending_dynamic_removal": "removing",
}


def _flags(health: str | None) -> str:
    """Envoy's health_flags (`/failed_outlier_check/failed_eds_health`) in a word or two."""
    if health in (None, "healthy"):
        return ""
    words = [_FLAGS.get(f, f.replace("_", " ")) for f in str(health).split("/") if f]
    return words[0] + ("+" if len(words) > 1 else "") if words else ""


def _why(reason: Reason | None) -> Text:
    if reason is None:
        return Text("-", style="dim")
    style = {"healthy": "green", "saturated": "bold red", "unhealthy": "red"}.get(
        reason.state, "yellow"
    )
    text = Text(reason.state, style=style)
    if reason.saturation is not None:
        text.append(f" {reason.saturation:.2f}", style="dim")
        if reason.driver and reason.saturation > 0:
            text.append(f" {reason.driver}", style="dim")
    return text


def _num(value: float | None, *, warn: float, bad: float) -> Text:
    if value is None:
        return Text("-", style="dim")
    style = "bold red" if value >= bad else "yellow" if value >= warn else ""
    return Text(f"{value:.0f}", style=style)


def _kv(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(f"{value:.0%}", style="yellow" if value >= 0.5 else "")


def _weight(weight: int | None) -> Text:
    if weight is None:
        return Text("-", style="dim")
    style = "green" if weight >= 100 else "red" if weight <= 1 else "yellow"
    return Text(str(weight), style=style)


def _gateways(board: Board) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"gateways: where each region's users were served (last {RECENT:.0f} s, counted "
        "by the replicas)",
        title_justify="left",
        title_style="dim",
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("gateway", no_wrap=True)
    table.add_column("sent", justify="right", no_wrap=True)
    table.add_column("served in", no_wrap=True)
    table.add_column("TTFT p50", justify="right", no_wrap=True)
    table.add_column("ok/failed", justify="right", no_wrap=True)
    table.add_column("heliostat lends", no_wrap=True)
    for panel in board.panels:
        table.add_row(
            Text(panel.region, style="bold"),
            Text(f"{panel.offered_rps:4.1f}/s"),
            _served_in(panel),
            Text("-" if panel.ttft_p50 is None else f"{panel.ttft_p50:.2f} s"),
            Text(f"{panel.ok}/{panel.failed}", style="red" if panel.failed else ""),
            Text(
                ", ".join(f"{share:.0%} to {q}" for q, share in sorted(panel.sends.items())) or "-",
                style="cyan" if panel.sends else "dim",
            ),
        )
    return table


def _served_in(panel: RegionPanel) -> Text:
    if not panel.served_in:
        return Text("-", style="dim")
    text = Text()
    for i, (region, share) in enumerate(sorted(panel.served_in.items(), key=lambda kv: -kv[1])):
        if i:
            text.append(" | ")
        style = "green" if region == panel.region else "bold magenta"
        text.append(f"{region} {share:.0%}", style=style)
    return text


def _footer(board: Board, log: list[str]) -> RenderableType:
    pushes = "-" if board.pushes is None else f"{board.pushes:.0f}"
    rate = "-" if board.push_rate is None else f"{board.push_rate:.1f}/s"
    totals = Text(
        f"requests {board.requests}  failed {board.failed}  heliostat pushes {pushes} (now {rate})",
        style="bold",
    )
    lines: list[RenderableType] = [totals]
    lines += [Text(line, style="dim") for line in log]
    for verdict in board.verdicts:  # one line each: the full details come in the final table
        line = Text(f"  {verdict.name}: ", no_wrap=True, overflow="ellipsis")
        line.append_text(_result(verdict.ok))
        line.append(f"  {verdict.detail}", style="dim")
        lines.append(line)
    return Group(*lines)
