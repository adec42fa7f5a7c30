"""The `heliostat` command line. No traceback reaches a user: errors are one clear line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from heliostat import logs
from heliostat.demo import story as demo_story
from heliostat.policy import PolicyError, load_policy
from heliostat.xds.bootstrap import BootstrapOptions, bootstrap
from heliostat.xds.nodes import Role


class UsageError(Exception):
    """A command line heliostat cannot act on."""


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}")
    return int(text)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed = True
            for line in exc.lines():
                print(line, file=sys.stderr)
            continue
        endpoints = sum(len(m.endpoints) for m in policy.spec.models)
        print(
            f"{path}: ok: policy {policy.metadata.name!r}, {len(policy.spec.regions)} regions, "
            f"{len(policy.spec.models)} models, {endpoints} endpoints"
        )
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from heliostat.runtime.serve import ServeOptions, run  # grpc loads only when serving

    logs.configure(args.log_level)
    xds_host, xds_port = args.xds_address
    admin_host, admin_port = args.admin_address
    run(
        ServeOptions(
            policy_path=Path(args.policy),
            xds_host=xds_host,
            xds_port=xds_port,
            admin_host=admin_host,
            admin_port=admin_port,
            policy_poll_s=args.policy_poll_interval,
        )
    )
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    xds_host, xds_port = args.xds_address
    options = BootstrapOptions(
        node_id=args.node_id,
        region=args.region,
        role=Role(args.role),
        xds_host=xds_host,
        xds_port=xds_port,
        admin_host=args.admin_address,
        admin_port=args.admin_port,
        listener_port=args.listener_port,
        delta=args.delta,
    )
    sys.stdout.write(yaml.safe_dump(bootstrap(options), sort_keys=False))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from heliostat.planet.command import main as simulate_main

    return simulate_main(
        args.scenario,
        args.report,
        jobs=args.jobs,
        only=args.only,
        quiet=args.quiet,
        fast=args.quick,
    )


def _sim_fleet(args: argparse.Namespace) -> int:
    import asyncio

    from heliostat.sim.fleet import run_fleet
    from heliostat.sim.from_policy import replica_configs, rtt_from_policy

    policy = load_policy(args.policy)
    try:
        regions = frozenset(args.region) if args.region else None
        configs = replica_configs(policy, speed=args.speed, regions=regions)
    except ValueError as exc:
        print(f"heliostat sim fleet: {exc}", file=sys.stderr)
        return 1
    for config in configs:
        print(
            f"replica {config.address} region={config.region} model={config.model} "
            f"version={config.version or '-'} max_num_seqs={config.max_num_seqs} "
            f"speed={config.speed:g}",
            flush=True,
        )
    asyncio.run(run_fleet(configs, rtt_from_policy(policy)))
    return 0


def _drain(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    host, port = args.admin_address
    body: dict[str, str] = {"model": args.model}
    if args.endpoint:
        body["endpoint"] = args.endpoint
    else:
        body["region"] = args.region
    request = urllib.request.Request(
        f"http://{host}:{port}/drain",
        data=json.dumps(body).encode(),
        method="DELETE" if args.undo else "POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        print(f"heliostat drain: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"heliostat drain: cannot reach heliostat at {host}:{port}: {reason}", file=sys.stderr
        )
        return 1
    verb = "draining" if result["draining"] else "returned to rotation"
    print(f"{result['model']}: {verb}: {', '.join(result['endpoints'])}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from heliostat.demo.command import main as demo_main

    return demo_main(
        duration=args.duration,
        headless=args.headless,
        summary=Path(args.summary) if args.summary else None,
        seed=args.seed,
        keep_logs=args.keep_logs,
    )


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="heliostat",
        description="xDS control plane that steers LLM inference traffic to free GPUs.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check policy files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(run=_validate)

    serve = commands.add_parser("serve", help="serve xDS to Envoys from a policy file")
    serve.add_argument("--policy", required=True, metavar="FILE")
    serve.add_argument("--xds-address", type=host_port, default=("127.0.0.1", 18000))
    serve.add_argument("--admin-address", type=host_port, default=("127.0.0.1", 9901))
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--policy-poll-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the policy file is checked for a new version",
    )
    serve.set_defaults(run=_serve)

    boot = commands.add_parser("bootstrap", help="print an Envoy bootstrap for a node")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--region", required=True)
    boot.add_argument("--role", choices=[r.value for r in Role], default=Role.GATEWAY.value)
    boot.add_argument("--xds-address", type=host_port, default=("127.0.0.1", 18000))
    boot.add_argument("--admin-address", default="127.0.0.1", help="Envoy admin host")
    boot.add_argument("--admin-port", type=port_number, default=19901)
    boot.add_argument("--listener-port", type=port_number, default=None)
    boot.add_argument("--delta", action="store_true", help="use incremental (delta) xDS")
    boot.set_defaults(run=_bootstrap)

    sim = commands.add_parser("sim", help="simulated vLLM-compatible replicas")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    fleet = sim_commands.add_parser("fleet", help="one simulated replica per policy endpoint")
    fleet.add_argument("--policy", required=True, metavar="FILE")
    fleet.add_argument("--speed", type=float, default=None, help="override every replica's speed")
    fleet.add_argument(
        "--region", action="append", metavar="REGION", help="only this region (repeatable)"
    )
    fleet.set_defaults(run=_sim_fleet)

    drain = commands.add_parser("drain", help="take endpoints out of rotation (or --undo)")
    drain.add_argument("--model", required=True)
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="ADDR")
    target.add_argument("--region")
    drain.add_argument("--undo", action="store_true", help="return them to rotation")
    drain.add_argument("--admin-address", type=host_port, default=("127.0.0.1", 9901))
    drain.set_defaults(run=_drain)

    demo = commands.add_parser(
        "demo",
        help="run the three-region demo",
        description=(
            "Start a simulated fleet in three regions, heliostat serve, one real Envoy gateway "
            "per region and a load generator on free loopback ports, then play four phases: "
            "steady, a surge in ap-southeast, a us-east outage, recovery. Each phase is judged "
            "from what the replicas, Envoy and heliostat report. Exit code 0 when every phase "
            "is ok, 1 otherwise (130 after Ctrl-C). Every process it starts is stopped at the "
            "end, on errors, on Ctrl-C, SIGTERM and SIGHUP."
        ),
    )
    demo.add_argument(
        "--duration",
        type=seconds,
        default=demo_story.DEFAULT_DURATION,
        metavar="SECONDS",
        help=f"length of the story, at least {demo_story.MIN_DURATION:g} (default "
        f"{demo_story.DEFAULT_DURATION:g}; start-up comes on top)",
    )
    demo.add_argument(
        "--headless", action="store_true", help="no live view: one line per phase, then a table"
    )
    demo.add_argument(
        "--summary",
        metavar="FILE",
        help='write {"phases": [{"name", "ok", "detail"}], "requests", "errors"} as JSON',
    )
    demo.add_argument(
        "--seed", type=int, default=1, help="seed of the request arrivals (default 1)"
    )
    demo.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work directory with every process's log (kept anyway on failure)",
    )
    demo.set_defaults(run=_demo)

    simulate = commands.add_parser(
        "simulate",
        help="play a planet scenario in virtual time against heliostat's control law",
        description=(
            "Play SCENARIO (see scenarios/) in virtual time: heliostat's own control law and "
            "the baselines (nearest_region, least_request, picker) route the same demand "
            "through a model of Envoy to simulated replicas. No sockets; seeded."
        ),
    )
    simulate.add_argument("scenario", metavar="SCENARIO.yaml")
    simulate.add_argument("--report", metavar="DIR", help="write report.json, report.md, plots")
    simulate.add_argument(
        "--jobs", type=int, default=1, help="play the policies in this many processes"
    )
    simulate.add_argument(
        "--only", action="append", metavar="POLICY", help="play only this run (repeatable)"
    )
    simulate.add_argument("--quiet", action="store_true", help="no progress lines")
    simulate.add_argument(
        "--quick",
        action="store_true",
        help="a fast version: a fifth of every region, one hour around the first event",
    )
    simulate.set_defaults(run=_simulate)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except PolicyError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"heliostat {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
