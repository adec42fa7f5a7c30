"""A real `heliostat serve` against what a new user does to it: taken ports, hostile policy
edits, a watcher that dies. It answers with one line, keeps the last good policy, stays
honest on /readyz and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import (
    LOCALHOST,
    Heliostat,
    free_port,
    http_get,
    policy_document,
    wait_until,
    write_policy,
)

SERVE = [sys.executable, "-m", "heliostat", "serve"]


def _policy(tmp_path: Path, name: str = "it") -> Path:
    path = tmp_path / "policy.yaml"
    document = policy_document(gateway_port=free_port(), endpoints=[("127.0.0.1:9", "eu-west")])
    document["metadata"]["name"] = name
    write_policy(path, document)
    return path


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind((LOCALHOST, 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _serve_once(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("which", ["xds", "admin"])
def test_a_taken_port_is_one_line_and_a_failed_exit(tmp_path: Path, which: str) -> None:
    policy = _policy(tmp_path)
    with _taken_port() as taken:
        ports = {"xds": free_port(), "admin": free_port(), which: taken}
        result = _serve_once(
            policy,
            "--xds-address",
            f"{LOCALHOST}:{ports['xds']}",
            "--admin-address",
            f"{LOCALHOST}:{ports['admin']}",
        )
    purpose = "xDS" if which == "xds" else "the admin API"
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"heliostat serve: cannot listen on {LOCALHOST}:{taken} for {purpose}: "
        "address already in use\n"
    )


def test_a_second_heliostat_on_the_same_xds_port_is_refused(tmp_path: Path) -> None:
    """gRPC sets SO_REUSEPORT by default: two control planes would quietly share the port
    and split the Envoys between them."""
    policy = _policy(tmp_path)
    first = Heliostat(policy, tmp_path)
    first.start()
    try:
        second = _serve_once(
            policy,
            "--xds-address",
            f"{LOCALHOST}:{first.xds_port}",
            "--admin-address",
            f"{LOCALHOST}:{free_port()}",
        )
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"heliostat serve: cannot listen on {LOCALHOST}:{first.xds_port} for xDS: "
            "address already in use"
        ]
        assert first.running
    finally:
        first.stop()


def _with_connect_timeout(valid: str, value: str) -> str:
    document = yaml.safe_load(valid)
    document["spec"]["models"][0]["connect_timeout"] = value
    return yaml.safe_dump(document, sort_keys=False)


def _hostile_policies(policy: Path, valid: str) -> list[tuple[str, str, str]]:
    """(what, file content, a piece of the first problem reported)."""
    laughs = ["a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return [
        (
            "100,000 [",
            "spec: " + "[" * 100_000 + "\n",
            f"{policy}:1: (document): invalid YAML: nested deeper than 32 levels",
        ),
        (
            "1,500 block levels",
            "".join(" " * depth + "k:\n" for depth in range(1_500)),
            f"{policy}:33: k.k.k",
        ),
        (
            "billion laughs",
            "\n".join(laughs) + "\n",
            f"{policy}:7: a6[0]: the document holds more than 1,000,000 values",
        ),
        ("over 4 MiB", "#" * (4 * 1024 * 1024 + 1), "the policy file is larger than 4 MiB"),
        (
            "connect_timeout 0ms",
            _with_connect_timeout(valid, "0ms"),
            "spec.models[0].connect_timeout: must be at least 1ms",
        ),
        (
            "connect_timeout 99999999999999999999h",
            _with_connect_timeout(valid, "99999999999999999999h"),
            "spec.models[0].connect_timeout: duration '99999999999999999999h' is too long",
        ),
    ]


def test_hostile_policy_edits_are_refused_and_serving_goes_on(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    valid = policy.read_text()
    heliostat = Heliostat(policy, tmp_path)
    heliostat.start()
    try:
        for what, text, problem in _hostile_policies(policy, valid):
            policy.write_text(text)
            wait_until(
                lambda p=problem: any(p in line for line in _last_error(heliostat)),
                timeout=15,
                message=f"the {what} policy refused",
            )
            state = heliostat.state()["policy"]
            assert state["name"] == "it", what
            assert len(state["last_error"]) == 1, (what, state["last_error"])
            assert http_get(heliostat.url("/readyz")) == (200, "ready\n"), what
        assert heliostat.metric("heliostat_policy_reloads_total", result="rejected") == 5
        assert heliostat.metric("heliostat_policy_reloads_total", result="failed") == 0

        document = yaml.safe_load(valid)
        document["metadata"]["name"] = "after"
        write_policy(policy, document)
        wait_until(lambda: heliostat.state()["policy"]["name"] == "after", timeout=15)
        assert heliostat.state()["policy"]["last_error"] is None

        process = heliostat.proc
        assert process is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        log = heliostat.log()
        assert "Traceback" not in log and "Exception ignored" not in log
        assert json.loads(log.rstrip().splitlines()[-1])["event"] == "stopped"
        with socket.socket() as probe:  # the xDS port was released
            probe.bind((LOCALHOST, heliostat.xds_port))
    finally:
        heliostat.stop()


def _last_error(heliostat: Heliostat) -> list[str]:
    return list(heliostat.state()["policy"]["last_error"] or [])
