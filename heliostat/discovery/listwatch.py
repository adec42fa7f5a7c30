"""List once, then watch from that resourceVersion: a local copy of some API objects.

This is the informer pattern with the official `kubernetes` client, kept to what heliostat
needs. It runs in its own thread (the client is blocking) and hands whole copies of the store
to `on_change`, which the owner marshals onto its event loop.

- A watch resumes from the last resourceVersion seen, bookmarks included, so a reconnect
  replays nothing and misses nothing.
- 410 Gone (the version was compacted away) relists, and the relisted state replaces the old.
- Any other failure (the API server restarting, a reset connection, a 5xx) keeps the store as
  it is: known endpoints stay served while the API server is away, and the watch resumes with
  a backoff of 0.25 s doubling to 5 s.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch

log = structlog.get_logger("heliostat.discovery")

JsonObject = dict[str, Any]
Store = dict[str, JsonObject]
ListCall = Callable[..., Any]
"""A list method of the client with its fixed arguments bound, such as
`lambda **kw: api.list_namespaced_endpoint_slice("ns", label_selector="a=b", **kw)`."""

BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 5.0
GONE = 410


def key_of(item: JsonObject) -> str:
    metadata = item.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


class ListWatch:
    def __init__(
        self,
        call: ListCall,
        what: str,
        on_change: Callable[[Store], None],
        *,
        watch_timeout_s: int = 240,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._call = call
        self.what = what
        self._on_change = on_change
        self._watch_timeout_s = watch_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._stopped = threading.Event()
        self._response: Any = None  # the watch response being read, to cut on stop
        self._thread: threading.Thread | None = None
        # Replaced, never changed in place: a reader in another thread holds a stable view.
        self.store: Store = {}
        self.resource_version: str | None = None
        self.synced = threading.Event()
        self.lists = 0  # how many times the store was (re)listed
        self.failures = 0
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"watch {self.what}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopped.set()
        _cut(self._response)  # a read blocked on the watch returns now
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._follow()
                backoff = BACKOFF_FIRST_S
            except ApiException as exc:
                if exc.status == GONE:
                    log.info("watch expired; relisting", what=self.what, reason=exc.reason)
                    self.resource_version = None
                    continue
                self._failed(f"API server answered {exc.status} {exc.reason}")
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError) as exc:
                if self._stopped.is_set():
                    break
                self._failed(f"{type(exc).__name__}: {exc}"[:300])
            else:
                continue
            self._stopped.wait(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    # -- steps ---------------------------------------------------------------------------

    def _list(self) -> None:
        response = self._call(
            _preload_content=False, _request_timeout=(self._connect_timeout_s, 30.0)
        )
        listing = json.loads(response.data)
        items = listing.get("items") or []
        self.resource_version = str(listing["metadata"]["resourceVersion"])
        store = {key_of(item): item for item in items}
        self.store = store
        self.lists += 1
        self.synced.set()
        self._on_change(store)

    def _follow(self) -> None:
        """One watch request, until the server ends it (its timeout) or it fails."""
        watch = Watch()

        def call(**kwargs: Any) -> Any:  # no annotations: the client yields plain dicts
            response = self._call(**kwargs)
            self._response = response
            if self._stopped.is_set():  # stop() ran before there was a response to cut
                _cut(response)
            return response

        events = watch.stream(
            call,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_s,
            _request_timeout=(self._connect_timeout_s, self._watch_timeout_s + 10.0),
        )
        for event in events:
            kind = event["type"]
            item = event["raw_object"]
            version = (item.get("metadata") or {}).get("resourceVersion")
            if version is not None:
                self.resource_version = str(version)
            if kind == "BOOKMARK":
                continue
            # Copy on write: readers on the event loop hold `store` while this thread moves
            # on, so the dict they hold is never changed under them.
            store = dict(self.store)
            if kind in ("ADDED", "MODIFIED"):
                store[key_of(item)] = item
            elif kind == "DELETED":
                store.pop(key_of(item), None)
            else:
                continue
            self.store = store
            self._on_change(store)
        if self.last_error is not None:
            log.info("watch resumed", what=self.what, resource_version=self.resource_version)
            self.last_error = None

    def _failed(self, cause: str) -> None:
        self.failures += 1
        if cause != self.last_error:
            log.warning(
                "watch failed; keeping what is known and retrying",
                what=self.what,
                known=len(self.store),
                cause=cause,
            )
        self.last_error = cause


def _cut(response: Any) -> None:
    """Shut a streaming response's socket down from another thread (closing it would wait
    for the reader); the reader then sees the end of the stream."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
