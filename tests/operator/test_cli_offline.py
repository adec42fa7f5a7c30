"""The operator commands that need no server: --version, validate -, diff of two files,
defaults in every --help. Run through `main`, as a user's shell would."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from heliostat import cli
from heliostat.version import version

DEMO = Path(__file__).parents[2] / "policies" / "demo.yaml"


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    finally:
        if stdin is not None:
            sys.stdin = old
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def changed(text: str) -> str:
    """The demo policy with a longer TTFT objective and one more eu-west endpoint."""
    lines = text.replace("ttft_ms: 800", "ttft_ms: 900", 1).splitlines()
    at = next(i for i, line in enumerate(lines) if "127.0.0.1:9201" in line)
    lines.insert(at + 1, lines[at].replace("9201", "9209"))
    return "\n".join(lines) + "\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.startswith(f"heliostat {version()} (Python 3.")


def test_validate_reads_standard_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", "-"], capsys, stdin=DEMO.read_text())
    assert code == 0
    assert out.startswith("<stdin>: ok: policy 'demo', 3 regions, 1 models")
    code, _, err = run(["validate", "-"], capsys, stdin="apiVersion: heliostat/v1\nkind: X\n")
    assert code == 1
    assert err.splitlines()[0].startswith("<stdin>:")


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", "-o", "json", str(DEMO), "-"], capsys, stdin="spec: 1\n")
    assert code == 1
    good, bad = json.loads(out)
    assert good["ok"] and good["endpoints"] == 7
    assert not bad["ok"] and bad["file"] == "<stdin>"
    assert any("missing required key 'apiVersion'" in p for p in bad["problems"])


def test_diff_of_two_files_names_what_changes_and_exits_like_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(changed(DEMO.read_text()))
    code, out, _ = run(["diff", str(DEMO), str(new)], capsys)
    assert code == 1
    blocks = out.split("view ")[1:]
    assert [b.splitlines()[0] for b in blocks] == [
        "gateway/ap-southeast/default:",
        "gateway/eu-west/default:",
        "gateway/us-east/default:",
    ]
    eu = blocks[1]
    assert "~ endpoints llama-70b" in eu
    assert "+ 127.0.0.1:9209 region=eu-west priority=0" in eu
    assert "route.retry_policy.per_try_timeout" in eu  # the TTFT objective sets it
    assert "~ cluster" not in eu  # clusters do not change
    code, out, _ = run(["diff", "-o", "json", str(DEMO), str(new)], capsys)
    assert code == 1
    result = json.loads(out)
    assert result["changed"] is True
    kinds = {(c["kind"], c["name"]) for v in result["views"] for c in v["changes"]}
    assert kinds == {("endpoints", "llama-70b"), ("routes", "heliostat_models")}


def test_diff_without_difference_and_with_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["diff", str(DEMO), str(DEMO)], capsys)
    assert (code, out) == (0, "no difference\n")
    code, _, err = run(["diff", str(DEMO), str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml:1:" in err and "cannot read policy file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("region: eu-west", "region: eu-wst", 1))
    code, _, err = run(["diff", str(DEMO), str(bad)], capsys)
    assert code == 2 and "unknown region 'eu-wst'" in err
    code, _, err = run(["diff", str(DEMO)], capsys)
    assert code == 2 and "give OLD and NEW policy files" in err


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["bootstrap"],
        ["status"],
        ["explain"],
        ["diff"],
        ["drain"],
        ["demo"],
        ["simulate"],
        ["sim", "fleet"],
        ["validate"],
    ],
)
def test_every_help_shows_defaults(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    parser = cli.parser()
    sub = parser
    for word in command:
        sub = next(
            a.choices[word]
            for a in sub._actions
            if isinstance(a.choices, dict) and word in a.choices
        )
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
            assert f"(default: {action.default}" in " ".join(out.split()), (action.dest, out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "s.yaml", "--jobs", "0"], "expected a whole number of at least 1, got '0'"),
        (["explain", "--model", ""], "argument --model: invalid name ''"),
        (["status", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
        (["serve", "--policy", "p", "--log-format", "xml"], "argument --log-format"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in err.strip().splitlines()[-1]
