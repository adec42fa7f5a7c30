"""report.md renders from whatever results exist: full, partial, broken or missing files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.common import BENCHMARKS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FAKE: dict[str, Any] = {
    "scale": {
        "size": "quick",
        "cases": [
            {
                "endpoints": e,
                "views": v,
                "full_tick_ms": e / 8.0,
                "incremental_tick_ms": e / 11.0,
                "full_tick_leds_ms": e / 4.0,
            }
            for e in (1000, 10000)
            for v in (3, 6)
        ],
    },
    "fanout": {
        "cases": [
            {
                "clients": c,
                "mode": m,
                "ack_p50_ms": 10.0 * c / 100,
                "ack_p99_ms": 20.0 * c / 100,
                "bytes_per_push": 160_000 if m == "sotw" else 50_000,
                "rss_mb": 100.0 + c / 20,
            }
            for c in (100, 1000)
            for m in ("sotw", "delta")
        ]
    },
    "convergence": {
        "interval_s": 0.5,
        "samples": [410.0, 530.5, 610.0, 700.25, 1200.0],
        "p50_ms": 610.0,
        "p99_ms": 1200.0,
    },
    "routing": {
        "setup": {
            "scenarios": {
                "regional_surge": {
                    "fleet": {
                        "slo_ttft_ms": 500,
                        "network_budget_ms": 170,
                        "regions": {
                            "us-east": {"rtt_ms": {"eu-west": 80, "ap-southeast": 210}},
                            "eu-west": {"rtt_ms": {"ap-southeast": 160}},
                            "ap-southeast": {"rtt_ms": {}},
                        },
                    },
                    "workload": {
                        "description": "ap-southeast surges",
                        "seconds": 55,
                        "phases": [
                            {
                                "start_s": 0,
                                "end_s": 15,
                                "load": {"eu-west": 0.5, "ap-southeast": 0.5},
                            },
                            {
                                "start_s": 15,
                                "end_s": 55,
                                "load": {"eu-west": 0.5, "ap-southeast": 2.0},
                            },
                        ],
                    },
                }
            }
        },
        "details": {
            "regional_surge": {
                "heliostat": {
                    "by_phase": [
                        {"eu-west": {"requests": 100, "slo_attainment": 0.99}},
                        {"eu-west": {"requests": 300, "slo_attainment": 0.975}},
                    ]
                }
            }
        },
        "workloads": {
            workload: {
                policy: {
                    "requests": 400,
                    "errors": 0,
                    "refused": 3 if policy == "heliostat" else 0,
                    "ttft_p50_ms": 120.0 + index,
                    "ttft_p99_ms": 900.0 + 10 * index,
                    "slo_attainment": 0.9 - index / 100,
                    "goodput_rps": 18.0 - index,
                    "prefix_hit_rate": 0.4,
                    "cross_region_share": 0.05,
                    "throughput_rps": 20.0,
                    "by_origin": {
                        "eu-west": {
                            "requests": 150,
                            "slo_attainment": 0.875,
                            "ttft_p99_ms": 777.0,
                            "cross_region_share": 0.0,
                        }
                    },
                    **(
                        {
                            "shares": [
                                {"t": 0.0, "shares": {"ap-southeast": {"ap-southeast": 1.0}}},
                                {
                                    "t": 20.0,
                                    "shares": {
                                        "ap-southeast": {"ap-southeast": 0.4, "eu-west": 0.6}
                                    },
                                },
                            ],
                            "max_reversals_per_min": 0.5,
                        }
                        if policy == "heliostat"
                        else {}
                    ),
                }
                for index, policy in enumerate(
                    (
                        "heliostat",
                        "round_robin",
                        "least_request",
                        "ring_hash",
                        "envoy_orca",
                        "picker",
                    )
                )
            }
            for workload in ("chat", "shared_prefix", "regional_surge")
        },
    },
    "failover": {"requests": 1200, "failed_requests": 3, "recover_ms": 850.0},
    "overhead": {
        "bare_p50_ms": 1.1,
        "bare_p99_ms": 2.5,
        "heliostat_p50_ms": 1.2,
        "heliostat_p99_ms": 2.7,
    },
}


def write_results(out: Path, names: tuple[str, ...] = BENCHMARKS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / f"{name}.json").write_text(json.dumps(FAKE[name]))


def sections(text: str) -> dict[str, str]:
    """report.md split at its `## ` headings, keyed by the JSON file each names."""
    found = {}
    for chunk in text.split("\n## ")[1:]:
        name = chunk.split("`", 2)[1].removesuffix(".json")
        found[name] = chunk
    return found


def test_every_benchmark_gets_its_table_and_plots(tmp_path: Path) -> None:
    write_results(tmp_path)
    path = report.write(tmp_path, size="quick")
    text = path.read_text()
    assert path == tmp_path / "report.md"
    header = text.splitlines()[2]
    assert "quick" in header and "CPUs" in header and "commit" in header
    parts = sections(text)
    assert list(parts) == list(BENCHMARKS)
    for name, body in parts.items():
        assert "not run" not in body, name
        assert "| " in body, f"{name} has no table"
        images = [line for line in body.splitlines() if line.startswith("![")]
        assert images, f"{name} has no plot"
        for line in images:
            file = line.rsplit("(", 1)[1].rstrip(")")
            assert "/" not in file  # linked relatively, beside report.md
            assert (tmp_path / file).read_bytes().startswith(PNG_MAGIC)
    assert "| 10000" in parts["scale"] and "1250.0" in parts["scale"]
    assert "full, LEDS" in parts["scale"] and "2500.0" in parts["scale"]  # serve's default form
    assert "delta" in parts["fanout"] and "50000" in parts["fanout"]
    routing = parts["routing"]
    assert "shared_prefix" in routing and "90.0%" in routing
    assert "| regional_surge | SLO met >= every baseline's - 1 pt" in routing
    assert "| met " in routing  # the targets, checked
    assert "| protection: eu-west's users during the surge >= before - 1 pt | 97.5%" in routing
    assert "87.5% · 777.0 · 0.0%" in routing  # by origin
    assert "| heliostat | eu-west | 99.0%  | 97.5%  |" in routing  # protection
    assert "routing-shares-regional_surge.png" in routing
    assert "0.25%" in parts["failover"]  # 3 of 1,200 failed
    assert "| 5 " in parts["convergence"]  # the samples, counted


def test_missing_files_read_not_run_and_the_rest_still_renders(tmp_path: Path) -> None:
    write_results(tmp_path, ("scale", "overhead"))
    parts = sections(report.write(tmp_path, size="tiny").read_text())
    assert set(parts) == set(BENCHMARKS)
    for name in ("fanout", "convergence", "routing", "failover"):
        assert "not run" in parts[name]
    assert "not run" not in parts["scale"] and "scale.png" in parts["scale"]
    assert not (tmp_path / "fanout.png").exists()


def test_partial_and_broken_files_cost_only_their_section(tmp_path: Path) -> None:
    write_results(tmp_path)
    (tmp_path / "fanout.json").write_text('{"cases": [{"clients": 100, "mode": "sotw"')
    (tmp_path / "convergence.json").write_text(json.dumps({"samples": 42, "p50_ms": 700}))
    (tmp_path / "failover.json").write_text(json.dumps({"requests": "many"}))
    (tmp_path / "routing.json").write_text(json.dumps({"workloads": {"chat": {"heliostat": 3}}}))
    (tmp_path / "overhead.json").write_text(json.dumps([1, 2]))
    scale: dict[str, Any] = {"cases": [{"endpoints": 1000, "views": 3, "full_tick_ms": 9.5}]}
    (tmp_path / "scale.json").write_text(json.dumps(scale))
    parts = sections(report.write(tmp_path, size="quick").read_text())
    assert "unreadable" in parts["fanout"]
    assert "not an object" in parts["overhead"]
    assert "| 42 " in parts["convergence"] and "—" in parts["convergence"]
    assert "many" in parts["failover"]
    assert "| chat" in parts["routing"]
    assert "9.5" in parts["scale"] and "—" in parts["scale"]


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_an_empty_directory_gives_a_report_of_sections_not_run(tmp_path: Path, size: str) -> None:
    text = report.write(tmp_path / "new", size=size).read_text()
    assert text.count("not run") == len(BENCHMARKS)
    assert f"**{size}**" in text
