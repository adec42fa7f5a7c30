"""Every command-line argument is checked before anything runs: one clear line, exit 2."""

from __future__ import annotations

import pytest
import yaml

from heliostat import cli
from heliostat.bootstrap import RECONNECT_BASE_S, RECONNECT_MAX_S, BootstrapOptions


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "0", "0.01", "1e9", "soon", ""])
def test_poll_interval_must_be_a_sensible_number_of_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(["serve", "--policy", "p.yaml", "--policy-poll-interval", value], capsys)
    assert line == (
        "heliostat serve: error: argument --policy-poll-interval: expected seconds between "
        f"0.05 and 86400, got {value!r}"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--node-id", "", "--region", "eu-west"],
            "argument --node-id: expected a node id without spaces or control characters, got ''",
        ),
        (
            ["--node-id", "gw 1", "--region", "eu-west"],
            "argument --node-id: expected a node id without spaces or control characters, "
            "got 'gw 1'",
        ),
        (["--node-id", "gw", "--region", ""], "argument --region: invalid name ''"),
        (["--node-id", "gw", "--region", "EU West"], "argument --region: invalid name 'EU West'"),
        (
            ["--node-id", "gw", "--region", "eu-west", "--admin-address", "not an ip"],
            "argument --admin-address: expected an IP address such as 127.0.0.1 or [::1], "
            "got 'not an ip'",
        ),
        (
            ["--node-id", "gw", "--region", "eu-west", "--xds-address", "::1:18000"],
            "argument --xds-address: write an IPv6 address in brackets, got '::1:18000'",
        ),
        (
            ["--node-id", "gw", "--region", "eu-west", "--xds-address", "bad host!:18000"],
            "argument --xds-address: expected HOST:PORT with an IP address or a DNS name, "
            "got 'bad host!:18000'",
        ),
        (
            ["--node-id", "gw", "--region", "eu-west", "--xds-address", "127.0.0.1:0"],
            "argument --xds-address: expected a port 1-65535, got '0'",
        ),
        (
            ["--node-id", "gw", "--region", "eu-west", "--admin-port", "65536"],
            "argument --admin-port: expected a port 1-65535, got '65536'",
        ),
        (
            ["--node-id", "gw", "--region", "eu-west", "--listener-port", "-1"],
            "argument --listener-port: expected a port 1-65535, got '-1'",
        ),
    ],
)
def test_bootstrap_refuses_what_would_make_a_broken_envoy(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(["bootstrap", *argv], capsys)
    assert line.startswith(f"heliostat bootstrap: error: {message}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--xds-address", "nowhere"], "argument --xds-address: expected HOST:PORT, got 'nowhere'"),
        (["--admin-address", ":9901"], "argument --admin-address: expected HOST:PORT, got ':9901'"),
        (
            ["--admin-address", "300.1.1.1:9901"],
            "argument --admin-address: expected an IP address such as 127.0.0.1 or [::1], "
            "got '300.1.1.1:9901'",
        ),
    ],
)
def test_serve_addresses_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(["serve", "--policy", "p.yaml", *argv], capsys) == (
        f"heliostat serve: error: {message}"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "Llama", "--region", "eu-west"], "argument --model: invalid name 'Llama'"),
        (
            ["--model", "m", "--endpoint", "gpu-1:8000"],
            "argument --endpoint: malformed address 'gpu-1:8000': the host must be an IP literal",
        ),
    ],
)
def test_drain_arguments_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(["drain", *argv], capsys).startswith(f"heliostat drain: error: {message}")


def test_drain_sends_the_endpoint_in_its_canonical_spelling() -> None:
    args = cli.parser().parse_args(["drain", "--model", "m", "--endpoint", "[::ffff:10.0.0.1]:080"])
    assert args.endpoint == "10.0.0.1:80"


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "fast"])
def test_sim_speed_is_a_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["sim", "fleet", "--policy", "p.yaml", "--speed", value], capsys)
    assert line.endswith(f"argument --speed: expected a positive number, got {value!r}")


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
def test_demo_duration_is_a_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument --duration" in refused(["demo", "--duration", value], capsys)


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        (
            ["serve"],
            ["(default: 127.0.0.1:18000)", "(default: 127.0.0.1:9901)", "(default: 1)"],
        ),
        (
            ["bootstrap"],
            ["(default: gateway)", "(default: 127.0.0.1:18000)", "(default: 19901)"],
        ),
        (["drain"], ["(default: 127.0.0.1:9901)"]),
    ],
)
def test_help_shows_the_defaults(
    command: list[str], defaults: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in defaults:
        assert default in text


def test_defaults_are_parsed_like_given_values() -> None:
    args = cli.parser().parse_args(["serve", "--policy", "p.yaml"])
    assert args.xds_address == ("127.0.0.1", 18000)
    assert args.admin_address == ("127.0.0.1", 9901)
    assert args.policy_poll_interval == 1.0
    boot = cli.parser().parse_args(["bootstrap", "--node-id", "gw", "--region", "eu-west"])
    assert boot.admin_port == 19901 and boot.admin_address == "127.0.0.1"


def test_a_good_bootstrap_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--node-id", "gw-1", "--region", "eu-west", "--admin-address", "[::1]"]
    assert cli.main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["node"]["id"] == "gw-1"
    assert config["node"]["locality"] == {"region": "eu-west"}
    assert config["admin"]["address"]["socket_address"]["address"] == "::1"
    (service,) = config["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service["envoy_grpc"]["retry_policy"] == {
        "retry_back_off": {
            "base_interval": f"{RECONNECT_BASE_S}s",
            "max_interval": f"{RECONNECT_MAX_S}s",
        }
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"node_id": ""}, "the node id must not be empty"),
        ({"region": ""}, "invalid name ''"),
        ({"admin_host": "localhost"}, "Envoy's admin address must be an IP address"),
        ({"admin_port": 0}, "the admin port must be 1-65535"),
        ({"listener_port": 70000}, "the listener port must be 1-65535"),
        ({"xds_host": ""}, "the xDS host must not be empty"),
    ],
)
def test_bootstrap_options_refuse_a_broken_bootstrap(
    changes: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"node_id": "gw", "region": "eu-west", **changes}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        BootstrapOptions(**fields)  # type: ignore[arg-type]
