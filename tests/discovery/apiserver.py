"""A local stand-in for the Kubernetes API server: list and watch, in the official JSON shapes.

No API server can be installed here, so the tests run the real `kubernetes` client against
this one. It keeps objects per collection (`/apis/GROUP/VERSION/namespaces/NS/PLURAL`), a
global resourceVersion, and a log of events, and answers:

- list: `{"kind": "...List", "metadata": {"resourceVersion"}, "items": [...]}`, filtered by an
  equality-based `labelSelector`;
- watch (`?watch=true&resourceVersion=N`): a chunked stream of `{"type", "object"}` lines,
  ADDED / MODIFIED / DELETED after N, BOOKMARK when asked (`allowWatchBookmarks`), until
  `timeoutSeconds`; a version older than the compaction floor gets the ERROR event with a
  410 `Status` (reason Expired), as the real server sends it inside a 200 watch response;
- `PATCH .../NAME/status`: a JSON merge patch of the status subresource (the generation is
  bumped only by spec changes, as for a CRD with a status subresource);
- `restart()`: every open connection is cut and the server listens again on the same port,
  with its state (etcd survives an API-server restart).

Every request is recorded (method, path, query) for the tests to check how the client
resumed. Bound to 127.0.0.1 on a free port; `stop()` closes everything.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from heliostat.lab.processes import LOCALHOST, free_port

Json = dict[str, Any]

KINDS = {"endpointslices": "EndpointSlice", "inferencepolicies": "InferencePolicy"}


@dataclass
class Event:
    version: int
    collection: str | None  # None: a bookmark for every watch
    kind: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    item: Json


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]


@dataclass
class FakeApiServer:
    port: int = field(default_factory=free_port)
    version: int = 100
    compacted: int = 0  # events at or below this version are gone: older watches get 410
    objects: dict[str, dict[str, Json]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None
    _sockets: set[socket.socket] = field(default_factory=set)
    _running: bool = False

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- the cluster's state, as a controller would change it ---------------------------

    def put(self, collection: str, item: Json) -> Json:
        """Create or replace an object (metadata.name required); returns it as stored."""
        with self._lock:
            store = self.objects.setdefault(collection, {})
            item = json.loads(json.dumps(item))
            metadata = item.setdefault("metadata", {})
            old = store.get(metadata["name"])
            self.version += 1
            metadata["resourceVersion"] = str(self.version)
            metadata.setdefault("namespace", collection.split("/namespaces/")[1].split("/")[0])
            if old is None:
                metadata["uid"] = str(uuid.uuid4())
                metadata["generation"] = 1
                metadata["creationTimestamp"] = "2026-12-06T00:00:00Z"
            else:
                metadata["uid"] = old["metadata"]["uid"]
                metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                changed = item.get("spec") != old.get("spec")
                metadata["generation"] = old["metadata"]["generation"] + int(changed)
                item.setdefault("status", old.get("status"))
                if item["status"] is None:
                    del item["status"]
            store[metadata["name"]] = item
            self.events.append(
                Event(self.version, collection, "ADDED" if old is None else "MODIFIED", item)
            )
            self._lock.notify_all()
            return item

    def delete(self, collection: str, name: str) -> None:
        with self._lock:
            item = self.objects[collection].pop(name)
            self.version += 1
            item = {**item, "metadata": {**item["metadata"], "resourceVersion": str(self.version)}}
            self.events.append(Event(self.version, collection, "DELETED", item))
            self._lock.notify_all()

    def bookmark(self) -> int:
        """A BOOKMARK at a new version that no object of the watched collections has."""
        with self._lock:
            self.version += 1
            self.events.append(Event(self.version, None, "BOOKMARK", {}))
            self._lock.notify_all()
            return self.version

    def compact(self) -> None:
        """Forget every event so far: a watch from an older version gets 410 Gone."""
        with self._lock:
            self.version += 1  # etcd compacts at a revision of its own
            self.compacted = self.version
            self.events.clear()

    def get(self, collection: str, name: str) -> Json:
        with self._lock:
            return json.loads(json.dumps(self.objects[collection][name]))

    def watches(self, collection: str) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.path == f"/{collection}" and r.query.get("watch") in ("true", "1")
        ]

    # -- the HTTP side ------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        self._server = ThreadingHTTPServer((LOCALHOST, self.port), self._handler())
        self._server.daemon_threads = True
        self._running = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._lock.notify_all()
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self, down_s: float = 0.3) -> None:
        """Cut every connection, refuse connections for `down_s`, listen again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"api": self})

    def due(
        self, since: int, collection: str, wanted: list[tuple[str, str, str]], deadline: float
    ) -> list[Event] | None:
        """The events a watch from `since` is owed, waiting for some until `deadline`; None
        when the watch should end (deadline passed, or the server stopped)."""
        with self._lock:
            while True:
                due = [
                    e
                    for e in self.events
                    if e.version > since
                    and (e.collection in (None, collection))
                    and (e.collection is None or _matches(e.item, wanted))
                ]
                if due:
                    return due
                left = deadline - time.monotonic()
                if left <= 0 or not self._running:
                    return None
                self._lock.wait(min(left, 0.5))


class _Handler(BaseHTTPRequestHandler):
    """One request to the stand-in API server; `api` is set on a subclass per server."""

    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.api._lock:
            self.api._sockets.add(self.connection)

    def finish(self) -> None:
        with self.api._lock:
            self.api._sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        path, query = self._parse()
        collection = path.strip("/")
        if query.get("watch") in ("true", "1"):
            self._watch(collection, query)
        else:
            self._list(collection, query)

    def do_PATCH(self) -> None:
        path, _ = self._parse()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        collection, _, rest = path.strip("/").rpartition("/")
        if rest != "status":
            self._reply(405, _status(405, "MethodNotAllowed", "only status is patched"))
            return
        collection, _, name = collection.rpartition("/")
        with self.api._lock:
            current = self.api.objects.get(collection, {}).get(name)
            if current is None:
                self._reply(404, _status(404, "NotFound", f"{name} not found"))
                return
            status = _merge(current.get("status") or {}, body.get("status") or {})
            item = {**current, "status": status}
            item.pop("metadata")
            item["metadata"] = dict(current["metadata"])
        stored = self.api.put(collection, item)
        self._reply(200, stored)

    def _parse(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.api.requests.append(Request(self.command, parts.path, query))
        return parts.path, query

    def _reply(self, code: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _list(self, collection: str, query: dict[str, str]) -> None:
        wanted = _selector(query.get("labelSelector", ""))
        plural = collection.rsplit("/", 1)[-1]
        with self.api._lock:
            items = [
                i for i in self.api.objects.get(collection, {}).values() if _matches(i, wanted)
            ]
            version = self.api.version
        self._reply(
            200,
            {
                "kind": f"{KINDS.get(plural, plural)}List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            },
        )

    def _watch(self, collection: str, query: dict[str, str]) -> None:
        wanted = _selector(query.get("labelSelector", ""))
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        plural = collection.rsplit("/", 1)[-1]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            if since < self.api.compacted:
                message = f"too old resource version: {since} ({self.api.compacted})"
                self._chunk({"type": "ERROR", "object": _status(410, "Expired", message)})
                return
            while (due := self.api.due(since, collection, wanted, deadline)) is not None:
                for event in due:
                    since = event.version
                    if event.kind != "BOOKMARK":
                        self._chunk({"type": event.kind, "object": event.item})
                    elif bookmarks:
                        self._chunk({"type": "BOOKMARK", "object": _bookmark(plural, since)})
        finally:
            with contextlib.suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            self.close_connection = True

    def _chunk(self, event: Json) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()


def _bookmark(plural: str, version: int) -> Json:
    return {
        "kind": KINDS.get(plural, plural),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(version)},
    }


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selector(text: str) -> list[tuple[str, str, str]]:
    """Equality-based selectors: `a=b`, `a==b`, `a!=b`."""
    terms = []
    for term in filter(None, text.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key, "!=", value))
        else:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append((key, "=", value))
    return terms


def _matches(item: Json, terms: list[tuple[str, str, str]]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return all((labels.get(k) == v) == (op == "=") for k, op, v in terms)


def _merge(base: Json, patch: Json) -> Json:
    """RFC 7386 JSON merge patch."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
