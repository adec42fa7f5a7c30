"""Admin safety: loopback by default; beyond loopback, state-changing calls need the bearer
token from a file, and `serve` will not expose the admin API without one."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from heliostat.admin import server as admin_server
from heliostat.admin.auth import TokenError, is_loopback, read_token
from heliostat.cli import main, parser
from tests.e2e.harness import LOCALHOST, Heliostat, free_port, policy_document
from tests.e2e.harness import write_policy as write

TOKEN = "s3cret-token-of-enough-length"


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    write(path, policy_document(gateway_port=free_port(), endpoints=[("127.0.0.1:9", "eu-west")]))
    return path


def test_loopback_is_told_apart() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("")
    assert not is_loopback("10.1.2.3")


def test_token_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token(good) == TOKEN
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(TokenError, match="at least 16 characters"):
        read_token(short)
    with pytest.raises(TokenError, match=r"cannot read the admin token file .*missing"):
        read_token(tmp_path / "missing")


async def test_state_changing_calls_need_the_token_reads_do_not() -> None:
    calls: list[bool] = []

    def drain(body: dict[str, object], drained: bool) -> dict[str, object]:
        calls.append(drained)
        return {"ok": True}

    app = admin_server.build_app(
        CollectorRegistry(), lambda: {}, lambda: (True, "ready"), drain, token=TOKEN
    )
    async with TestClient(TestServer(app)) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/debug/state"):
            assert (await client.get(path)).status == 200, path
        for method in ("POST", "DELETE"):
            for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await client.request(method, "/drain", json={}, headers=header)
                assert response.status == 401
                assert "Bearer" in (await response.json())["error"]
            response = await client.request(
                method, "/drain", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status == 200
    assert calls == [True, False]  # only the authorised calls reached the action


def _serve(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heliostat", "serve", "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_an_open_admin_api_without_a_token(tmp_path: Path) -> None:
    port = free_port()
    result = _serve(
        _policy(tmp_path),
        "--xds-address",
        f"{LOCALHOST}:{free_port()}",
        "--admin-address",
        f"0.0.0.0:{port}",
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"heliostat serve: the admin API on 0.0.0.0:{port} is reachable beyond loopback: "
        "give --admin-token-file FILE (drain and other state-changing calls then need its "
        "bearer token)\n"
    )


def test_drain_through_the_cli_with_and_without_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    heliostat = Heliostat(_policy(tmp_path), tmp_path)
    heliostat.args += ["--admin-token-file", str(token)]
    heliostat.start()
    try:
        where = ["--admin-address", f"{LOCALHOST}:{heliostat.admin_port}"]
        drain = ["drain", "--model", "llama-70b", "--endpoint", "127.0.0.1:9", *where]
        assert main(drain) == 1
        assert "send Authorization: Bearer <token>" in capsys.readouterr().err
        assert main([*drain, "--admin-token-file", str(token)]) == 0
        assert "draining" in capsys.readouterr().out
        assert heliostat.state()["control"]["drained"] == ["llama-70b/127.0.0.1:9"]
        request = urllib.request.Request(
            heliostat.url("/drain"), data=json.dumps({}).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    finally:
        heliostat.stop()


def test_the_default_admin_address_is_loopback() -> None:
    args = parser().parse_args(["serve", "--policy", "p.yaml"])
    assert tuple(args.admin_address) == ("127.0.0.1", 9901)
    assert args.admin_token_file is None
