"""The `heliostat` command line. No traceback reaches a user: errors are one clear line."""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from heliostat import logs
from heliostat.bootstrap import BootstrapOptions, bootstrap
from heliostat.demo import story as demo_story
from heliostat.ops.client import AdminError
from heliostat.policy import Policy, PolicyError, load_policy, parse_policy
from heliostat.policy.fields import check_name
from heliostat.policy.schema import canonical_address
from heliostat.security.limits import StreamLimits
from heliostat.signals.from_policy import policy_notes
from heliostat.version import python_version, version
from heliostat.xds.grpc.settle import QUIET_S
from heliostat.xds.resources.nodes import Role


class UsageError(Exception):
    """A command line heliostat cannot act on."""


if TYPE_CHECKING:  # grpc loads only when serving
    from heliostat.security.tls import TlsFiles

# -- argument types: each refuses a bad value with one line saying what is expected ---------

_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$",
    re.IGNORECASE,
)


def _split_host_port(text: str) -> tuple[str, str, bool]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    return (host[1:-1] if bracketed else host), port, bracketed


def _check_ip(host: str, bracketed: bool, text: str) -> None:
    """`host` is an IP literal; IPv6 in brackets, so the port cannot be mistaken for part
    of the address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IP address such as 127.0.0.1 or [::1], got {text!r}"
        ) from None
    if (ip.version == 6) != bracketed:
        if bracketed:
            raise argparse.ArgumentTypeError(f"only IPv6 addresses take brackets, got {text!r}")
        raise argparse.ArgumentTypeError(f"write an IPv6 address in brackets, got {text!r}")


def port_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}")
    return int(text)


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT where HOST is an IP address ([::1] for IPv6) or a DNS name."""
    host, port, bracketed = _split_host_port(text)
    if bracketed or ":" in host or _looks_numeric(host):
        _check_ip(host, bracketed, text)
    elif not _HOSTNAME.match(host):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with an IP address or a DNS name, got {text!r}"
        )
    return host, port_number(port)


def ip_port(text: str) -> tuple[str, int]:
    """IP:PORT: for addresses Envoy itself binds, which it does not resolve."""
    host, port, bracketed = _split_host_port(text)
    _check_ip(host, bracketed, text)
    return host, port_number(port)


def ip_address(text: str) -> str:
    """An IP address, unbracketed (`::1`) or bracketed (`[::1]`)."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    _check_ip(host, ":" in host, text)
    return host


def _looks_numeric(host: str) -> bool:
    return host.replace(".", "").isdigit()


def name(text: str) -> str:
    """A policy name (region, model): lower-case letters, digits, '.', '_', '-'."""
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_id(text: str) -> str:
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"expected a node id without spaces or control characters, got {text!r}"
        )
    if len(text) > 256:
        raise argparse.ArgumentTypeError(f"a node id has at most 256 characters, got {len(text)}")
    return text


def endpoint_address(text: str) -> str:
    """An endpoint's IP:PORT, in the canonical spelling the policy stores."""
    try:
        return canonical_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN fails every comparison
            raise argparse.ArgumentTypeError(
                f"expected seconds between {low:g} and {high:g}, got {text!r}"
            )
        return value

    return parse


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


class _Help(argparse.HelpFormatter):
    """Every option's help says its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


STDIN = "-"


def read_policy(path: str) -> Policy:
    """A policy file, or standard input for `-` (errors then name `<stdin>`)."""
    if path == STDIN:
        return parse_policy(sys.stdin.read(), "<stdin>")
    return load_policy(path)


def _validate(args: argparse.Namespace) -> int:
    import json

    failed = False
    results = []
    for path in args.files:
        shown = "<stdin>" if path == STDIN else path
        try:
            policy = read_policy(path)
        except PolicyError as exc:
            failed = True
            results.append({"file": shown, "ok": False, "problems": exc.lines()})
            if args.output == "table":
                for line in exc.lines():
                    print(line, file=sys.stderr)
            continue
        endpoints = sum(len(m.endpoints) for m in policy.spec.models)
        notes = policy_notes(policy)
        results.append(
            {
                "file": shown,
                "ok": True,
                "policy": policy.metadata.name,
                "regions": len(policy.spec.regions),
                "models": len(policy.spec.models),
                "endpoints": endpoints,
                "notes": notes,
            }
        )
        if args.output == "table":
            print(
                f"{shown}: ok: policy {policy.metadata.name!r}, {len(policy.spec.regions)} "
                f"regions, {len(policy.spec.models)} models, {endpoints} endpoints"
            )
            for note in notes:
                print(f"{shown}: note: {note}")
    if args.output == "json":
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _status(args: argparse.Namespace) -> int:
    from heliostat.ops import client, status

    nodes = client.call(args.admin_address, "/debug/state", query={"only": "nodes"})["nodes"]
    if args.output == "json":
        _print_json(status.as_json(nodes))
    else:
        sys.stdout.write(status.render(nodes))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from heliostat.ops import client, explain

    state = client.call(args.admin_address, "/debug/state")
    try:
        result = explain.explain(state, args.model, args.region, args.endpoint)
    except explain.ExplainError as exc:
        print(f"heliostat explain: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        _print_json(result)
    else:
        sys.stdout.write(explain.render(result))
    return 0


def _diff(args: argparse.Namespace) -> int:
    """Exit codes as diff(1): 0 the same, 1 different, 2 trouble (shown on stderr)."""
    from heliostat.balance import static_views
    from heliostat.ops import client, diff

    try:
        if args.admin_address is not None:
            if len(args.files) != 1:
                raise UsageError("with --admin-address give only the new policy file")
            path = args.files[0]
            text = sys.stdin.read() if path == STDIN else Path(path).read_text()
            source = "<stdin>" if path == STDIN else path
            answer = client.call(
                args.admin_address, "/debug/diff", query={"source": source}, body=text.encode()
            )
            result = diff.PolicyDiff.from_json(answer)
        else:
            if len(args.files) != 2:
                raise UsageError("give OLD and NEW policy files, or NEW and --admin-address")
            old, new = (read_policy(p) for p in args.files)
            result = diff.diff_policies(
                (old, static_views(old)), (new, static_views(new)), diff.gateway_groups(old, new)
            )
    except PolicyError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 2
    except (UsageError, AdminError) as exc:
        for line in str(exc).splitlines():
            print(f"heliostat diff: {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"heliostat diff: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        _print_json(result.as_json())
    else:
        sys.stdout.write(diff.render(result))
    return 1 if result.changed else 0


def _serve(args: argparse.Namespace) -> int:
    # grpc loads only when serving
    from heliostat.discovery.kube import ClusterAccess
    from heliostat.runtime.supervise import Unrecoverable
    from heliostat.serve import ServeOptions, StartupError, run

    logs.configure(args.log_level, args.log_format)
    cluster = None
    if args.kube_server or args.kubeconfig:
        cluster = ClusterAccess(server=args.kube_server, kubeconfig=args.kubeconfig)
    xds_host, xds_port = args.xds_address
    admin_host, admin_port = args.admin_address
    try:
        run(
            ServeOptions(
                policy_path=Path(args.policy or "-"),  # unused with --policy-resource
                xds_host=xds_host,
                xds_port=xds_port,
                admin_host=admin_host,
                admin_port=admin_port,
                policy_poll_s=args.policy_poll_interval,
                policy_resource=args.policy_resource,
                cluster=cluster,
                admin_token_file=args.admin_token_file,
                tls=_tls_files(args),
                trust_domain=args.trust_domain,
                insecure=args.insecure,
                limits=StreamLimits(
                    max_request_bytes=args.max_xds_request_bytes,
                    max_streams=args.max_xds_streams,
                    rate=args.node_request_rate,
                    burst=args.node_request_burst,
                    log_every_s=args.refusal_log_interval,
                ),
                leds=args.leds,
                leds_settle_after_s=args.leds_settle_after,
            )
        )
    except (StartupError, Unrecoverable) as exc:
        print(f"heliostat serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    from heliostat.security.tls import TlsFiles

    given = [args.tls_cert, args.tls_key, args.client_ca]
    if not any(given):
        return None
    if not all(given):
        raise SystemExit("heliostat serve: mTLS needs all of --tls-cert, --tls-key and --client-ca")
    return TlsFiles(args.tls_cert, args.tls_key, args.client_ca)


def _bootstrap(args: argparse.Namespace) -> int:
    xds_host, xds_port = args.xds_address
    try:
        options = _bootstrap_options(args, xds_host, xds_port)
    except ValueError as exc:
        print(f"heliostat bootstrap: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(bootstrap(options), sort_keys=False))
    return 0


def _bootstrap_options(args: argparse.Namespace, xds_host: str, xds_port: int) -> BootstrapOptions:
    return BootstrapOptions(
        node_id=args.node_id,
        region=args.region,
        role=Role(args.role),
        xds_host=xds_host,
        xds_port=xds_port,
        admin_host=args.admin_address,
        admin_port=args.admin_port,
        listener_port=args.listener_port,
        east_west_port=args.east_west_port,
        delta=args.delta,
        tls_cert=_absolute(args.tls_cert),
        tls_key=_absolute(args.tls_key),
        ca=_absolute(args.ca),
    )


def _absolute(path: Path | None) -> str | None:
    """Envoy reads the file relative to its own working directory: pin it down here."""
    return None if path is None else str(path.resolve())


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

    logs.configure(args.log_level, args.log_format)
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
    headers = {"content-type": "application/json"}
    if args.admin_token_file is not None:
        from heliostat.admin.auth import TokenError, read_token

        try:
            headers["authorization"] = f"Bearer {read_token(args.admin_token_file)}"
        except TokenError as exc:
            print(f"heliostat drain: {exc}", file=sys.stderr)
            return 1
    request = urllib.request.Request(
        f"http://{host}:{port}/drain",
        data=json.dumps(body).encode(),
        method="DELETE" if args.undo else "POST",
        headers=headers,
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="heliostat",
        description="xDS control plane that steers LLM inference traffic to free GPUs.",
        formatter_class=_Help,
    )
    top.add_argument(
        "--version",
        action="version",
        version=f"heliostat {version()} (Python {python_version()})",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description, formatter_class=_Help)

    def output(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-o",
            "--output",
            choices=["table", "json"],
            default="table",
            help="readable columns, or JSON for scripts",
        )

    def admin(sub: argparse.ArgumentParser, default: str | None = "127.0.0.1:9901") -> None:
        sub.add_argument(
            "--admin-address",
            type=host_port,
            default=default,
            metavar="HOST:PORT",
            help="the admin API of the running heliostat serve",
        )

    def logging_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--log-level", default="info", choices=logs.LEVELS, help="least level logged"
        )
        sub.add_argument(
            "--log-format",
            default="auto",
            choices=logs.FORMATS,
            help="json lines, or console lines; auto: console on a terminal, json otherwise",
        )

    validate = command("validate", help="check policy files")
    validate.add_argument(
        "files", nargs="+", metavar="FILE", help="policy files to check; - reads standard input"
    )
    output(validate)
    validate.set_defaults(run=_validate)

    status = command(
        "status",
        help="every connected Envoy and how in sync it is",
        description="One row per connected Envoy: node id, region, role, xDS mode, how long "
        "it has been connected, and per resource type whether it has ACKed the version "
        "heliostat last sent (SYNCED), not answered yet (SENT) or rejected it (NACKED, with "
        "the error).",
    )
    admin(status)
    output(status)
    status.set_defaults(run=_status)

    explain = command(
        "explain",
        help="why a model's endpoints have their weights; the region's allocation",
        description="Each endpoint's signals (queue, running, KV use, age), saturation, "
        "weight, priority, health and the control law's reason, and per region the "
        "allocation: demand, capacity, shares sent and received, refusals, and why.",
    )
    explain.add_argument("--model", required=True, type=name, help="the model")
    explain.add_argument(
        "--region", type=name, help="show the view of this region's Envoys (priorities, shares)"
    )
    explain.add_argument(
        "--endpoint", type=endpoint_address, metavar="IP:PORT", help="only this endpoint"
    )
    admin(explain)
    output(explain)
    explain.set_defaults(run=_explain)

    diff = command(
        "diff",
        help="what a policy change would change in the Envoys' configuration",
        description="heliostat diff OLD.yaml NEW.yaml compares two policy files offline (each "
        "translated with no signals); heliostat diff NEW.yaml --admin-address HOST:PORT asks "
        "the running server what NEW would change against what it serves now, with its live "
        "signals. Nothing is applied. Exit code 0: no difference, 1: differences, 2: error.",
    )
    diff.add_argument(
        "files", nargs="+", metavar="FILE", help="OLD NEW, or NEW with --admin-address; - is stdin"
    )
    admin(diff, default=None)
    output(diff)
    diff.set_defaults(run=_diff)

    serve = command("serve", help="serve xDS to Envoys from a policy file")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="the policy file")
    source.add_argument(
        "--policy-resource",
        metavar="NAMESPACE/NAME",
        help="the policy from an InferencePolicy resource (heliostat on Kubernetes)",
    )
    serve.add_argument(
        "--kube-server",
        metavar="URL",
        help="the Kubernetes API server (default: in-cluster, else the kubeconfig)",
    )
    serve.add_argument("--kubeconfig", metavar="FILE", help="a kubeconfig instead of the default")
    serve.add_argument(
        "--xds-address",
        type=host_port,
        default="127.0.0.1:18000",
        metavar="HOST:PORT",
        help="where Envoys connect for xDS",
    )
    serve.add_argument(
        "--admin-address",
        type=host_port,
        default="127.0.0.1:9901",
        metavar="HOST:PORT",
        help="the admin API: health, readiness, metrics, debug state, drain",
    )
    logging_options(serve)
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token that drain and other state-changing admin calls need "
        "(required when --admin-address is not loopback)",
    )
    serve.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="xDS server certificate (PEM), for mTLS"
    )
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    serve.add_argument(
        "--client-ca",
        type=Path,
        metavar="FILE",
        help="CA that signs the nodes' client certificates; each must name its node "
        "(spiffe://DOMAIN/ns/REGION/sa/NODE_ID or NODE_ID.REGION.SUFFIX)",
    )
    serve.add_argument(
        "--trust-domain", metavar="DOMAIN", help="accept SPIFFE IDs of this trust domain only"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext xDS on an address beyond loopback",
    )
    serve.add_argument(
        "--leds",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send delta-xDS gateways each endpoint as its own LEDS resource: one endpoint's "
        "change is ~2 KB per gateway instead of whole assignments (SotW gateways always get "
        "EDS); --no-leds sends delta gateways whole assignments too",
    )
    serve.add_argument(
        "--leds-settle-after",
        type=seconds_between(0, 86_400),
        default=f"{QUIET_S:g}",
        metavar="SECONDS",
        help="with LEDS, a gateway's assignments take their own versions once its endpoints "
        "were still this long (a reconnect then re-sends no endpoint; a clean stop settles "
        "them all first); until then each endpoint change is one LEDS response, after it "
        "the first change is two",
    )
    serve.add_argument(
        "--policy-poll-interval",
        type=seconds_between(0.05, 86_400),
        default="1",
        metavar="SECONDS",
        help="how often the policy file is checked for a new version",
    )
    limits = StreamLimits()
    serve.add_argument(
        "--max-xds-request-bytes",
        type=positive_int,
        default=limits.max_request_bytes,
        metavar="BYTES",
        help="largest xDS request read; a larger one is refused by gRPC (RESOURCE_EXHAUSTED)",
    )
    serve.add_argument(
        "--max-xds-streams",
        type=positive_int,
        default=limits.max_streams,
        metavar="N",
        help="xDS streams open at once; one more is refused with RESOURCE_EXHAUSTED",
    )
    serve.add_argument(
        "--node-request-rate",
        type=positive_number,
        default=f"{limits.rate:g}",
        metavar="PER_SECOND",
        help="xDS requests one node id may send per second, over all its streams, "
        "new streams included; beyond it its streams are ended or refused",
    )
    serve.add_argument(
        "--node-request-burst",
        type=positive_int,
        default=limits.burst,
        metavar="N",
        help="requests a node may send at once above --node-request-rate",
    )
    serve.add_argument(
        "--refusal-log-interval",
        type=seconds_between(0.1, 86_400),
        default=f"{limits.log_every_s:g}",
        metavar="SECONDS",
        help="a node refused again and again is logged once per interval, with a count",
    )
    serve.set_defaults(run=_serve)

    boot = command("bootstrap", help="print an Envoy bootstrap for a node")
    boot.add_argument("--node-id", required=True, type=node_id, help="the node's unique id")
    boot.add_argument(
        "--region", required=True, type=name, help="the node's region, as the policy names it"
    )
    boot.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.GATEWAY.value,
        help="the node's role",
    )
    boot.add_argument(
        "--xds-address",
        type=host_port,
        default="127.0.0.1:18000",
        metavar="HOST:PORT",
        help="heliostat's xDS address",
    )
    boot.add_argument(
        "--admin-address",
        type=ip_address,
        default="127.0.0.1",
        metavar="IP",
        help="Envoy's admin address (an IP: Envoy does not resolve it)",
    )
    boot.add_argument("--admin-port", type=port_number, default="19901", help="Envoy's admin port")
    boot.add_argument(
        "--listener-port",
        type=port_number,
        default=None,
        help="the gateway listener's port, instead of the policy's",
    )
    boot.add_argument(
        "--east-west-port",
        type=port_number,
        default=None,
        help="the east-west listener's port (requests other regions' gateways lend here), "
        "instead of the port of the region's spec.regions.R.east_west address",
    )
    boot.add_argument("--delta", action="store_true", help="use incremental (delta) xDS")
    boot.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="this node's client certificate (mTLS)"
    )
    boot.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    boot.add_argument(
        "--ca", type=Path, metavar="FILE", help="the CA that signed heliostat's certificate"
    )
    boot.set_defaults(run=_bootstrap)

    sim = command("sim", help="simulated vLLM-compatible replicas")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    fleet = sim_commands.add_parser(
        "fleet", help="one simulated replica per policy endpoint", formatter_class=_Help
    )
    fleet.add_argument("--policy", required=True, metavar="FILE", help="the policy file")
    fleet.add_argument(
        "--speed",
        type=positive_number,
        default=None,
        help="override every replica's speed (1 is real time)",
    )
    fleet.add_argument(
        "--region",
        action="append",
        type=name,
        metavar="REGION",
        help="only this region (repeatable)",
    )
    logging_options(fleet)
    fleet.set_defaults(run=_sim_fleet)

    drain = command("drain", help="take endpoints out of rotation (or --undo)")
    drain.add_argument("--model", required=True, type=name, help="the model")
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--endpoint", metavar="IP:PORT", type=endpoint_address, help="one endpoint of the model"
    )
    target.add_argument("--region", type=name, help="every endpoint of the model in a region")
    drain.add_argument("--undo", action="store_true", help="return them to rotation")
    drain.add_argument(
        "--admin-address",
        type=host_port,
        default="127.0.0.1:9901",
        metavar="HOST:PORT",
        help="the admin API of the running heliostat serve",
    )
    drain.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the bearer token heliostat serve was given (--admin-token-file)",
    )
    drain.set_defaults(run=_drain)

    demo = command(
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
    demo.add_argument("--seed", type=int, default=1, help="seed of the request arrivals")
    demo.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work directory with every process's log (kept anyway on failure)",
    )
    demo.set_defaults(run=_demo)

    simulate = command(
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
        "--jobs", type=positive_int, default=1, help="play the policies in this many processes"
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
    except AdminError as exc:
        for line in str(exc).splitlines():
            print(f"heliostat {args.command}: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"heliostat {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
