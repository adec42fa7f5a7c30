"""The list/watch loop, through the real `kubernetes` client, against a local API server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from heliostat.discovery.kube import ClusterAccess, api_client
from heliostat.discovery.listwatch import ListWatch, Store
from heliostat.discovery.slices import endpoints_from_slices
from heliostat.policy.selector import KubernetesSelector
from tests.discovery.apiserver import FakeApiServer
from tests.discovery.shapes import SLICES, endpoint, endpoint_slice

SELECTOR = "heliostat.dev/model=llama-70b"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


class Follower:
    """A ListWatch on the model's slices and every store it handed over."""

    def __init__(self, api: FakeApiServer, watch_timeout_s: int = 30) -> None:
        discovery = client.DiscoveryV1Api(api_client(ClusterAccess(server=api.url)))
        self.stores: list[Store] = []
        self.changed = threading.Event()

        def call(**kwargs: Any) -> Any:
            return discovery.list_namespaced_endpoint_slice(
                "inference", label_selector=SELECTOR, **kwargs
            )

        self.watch = ListWatch(call, "test", self._landed, watch_timeout_s=watch_timeout_s)

    def _landed(self, store: Store) -> None:
        self.stores.append(store)
        self.changed.set()

    def addresses(self) -> list[str]:
        found = endpoints_from_slices(
            self.watch.store.values(), KubernetesSelector(), {"us-east", "eu-west"}
        )
        return [e.address for e in found.endpoints]


@pytest.fixture
def follow(api: FakeApiServer) -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def make(**kwargs: Any) -> Follower:
        follower = Follower(api, **kwargs)
        follower.watch.start()
        started.append(follower)
        return follower

    yield make
    for follower in started:
        follower.watch.stop()
        assert follower.watch._thread is not None
        assert not follower.watch._thread.is_alive()


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {check.__doc__ or check}")
        time.sleep(0.02)


def test_list_then_added_modified_deleted(
    api: FakeApiServer, follow: Callable[..., Follower]
) -> None:
    api.put(SLICES, endpoint_slice("a", [endpoint("10.0.0.1")]))
    api.put(SLICES, endpoint_slice("other", [endpoint("10.5.0.1")], model="mistral"))
    follower = follow()
    eventually(lambda: follower.addresses() == ["10.0.0.1:8000"])
    api.put(SLICES, endpoint_slice("b", [endpoint("10.0.0.2")], region="eu-west"))
    eventually(lambda: follower.addresses() == ["10.0.0.1:8000", "10.0.0.2:8000"])
    api.put(SLICES, endpoint_slice("a", [endpoint("10.0.0.1", ready=False)]))
    eventually(lambda: follower.addresses() == ["10.0.0.2:8000"])
    api.delete(SLICES, "b")
    eventually(lambda: follower.addresses() == [])
    assert follower.watch.lists == 1
    assert set(follower.watch.store) == {"inference/a"}  # the other model's slice never came
    (watch,) = api.watches(SLICES)
    assert watch.query["labelSelector"] == SELECTOR
    assert watch.query["allowWatchBookmarks"] == "true"


def test_a_bookmark_moves_the_resume_point(
    api: FakeApiServer, follow: Callable[..., Follower]
) -> None:
    api.put(SLICES, endpoint_slice("a", [endpoint("10.0.0.1")]))
    follower = follow(watch_timeout_s=1)  # the server ends each watch after 1 s
    eventually(lambda: api.watches(SLICES))
    mark = api.bookmark()
    eventually(lambda: follower.watch.resource_version == str(mark))
    eventually(lambda: any(w.query["resourceVersion"] == str(mark) for w in api.watches(SLICES)))
    assert follower.watch.lists == 1  # resumed, not relisted
    assert len(follower.stores) == 1  # a bookmark changes nothing known


def test_410_gone_relists_and_the_relisted_state_replaces_the_old(
    api: FakeApiServer, follow: Callable[..., Follower]
) -> None:
    api.put(SLICES, endpoint_slice("a", [endpoint("10.0.0.1")]))
    api.put(SLICES, endpoint_slice("b", [endpoint("10.0.0.2")]))
    follower = follow(watch_timeout_s=1)
    eventually(lambda: follower.addresses() == ["10.0.0.1:8000", "10.0.0.2:8000"])
    api.stop()  # away long enough for its history to be compacted
    api.delete(SLICES, "b")
    api.put(SLICES, endpoint_slice("c", [endpoint("10.0.0.3")]))
    api.compact()
    api.start()
    eventually(lambda: follower.watch.lists == 2, timeout=15)
    eventually(lambda: follower.addresses() == ["10.0.0.1:8000", "10.0.0.3:8000"])
    lists = [r for r in api.requests if r.path == f"/{SLICES}" and "watch" not in r.query]
    assert len(lists) == 2


def test_an_api_server_restart_mid_watch_keeps_what_is_known_and_resumes(
    api: FakeApiServer, follow: Callable[..., Follower]
) -> None:
    api.put(SLICES, endpoint_slice("a", [endpoint("10.0.0.1")]))
    follower = follow()
    eventually(lambda: api.watches(SLICES) and follower.addresses() == ["10.0.0.1:8000"])
    seen = follower.watch.resource_version
    api.stop()
    eventually(lambda: follower.watch.failures >= 1)
    time.sleep(0.5)
    assert follower.addresses() == ["10.0.0.1:8000"]  # nothing dropped while it is away
    assert follower.watch.last_error is not None
    api.put(SLICES, endpoint_slice("b", [endpoint("10.0.0.2")]))  # happens while it is down
    api.start()
    eventually(lambda: follower.addresses() == ["10.0.0.1:8000", "10.0.0.2:8000"], timeout=15)
    assert follower.watch.lists == 1  # resumed from its version: nothing relisted
    assert api.watches(SLICES)[-1].query["resourceVersion"] == seen


def test_stop_ends_a_blocked_watch_at_once(
    api: FakeApiServer, follow: Callable[..., Follower]
) -> None:
    follower = follow()
    eventually(lambda: api.watches(SLICES))
    started = time.monotonic()
    follower.watch.stop()
    assert follower.watch._thread is not None
    assert not follower.watch._thread.is_alive()
    assert time.monotonic() - started < 2.0


async def test_models_share_a_watch_per_selector_and_a_policy_change_retargets(
    api: FakeApiServer,
) -> None:
    import asyncio

    from heliostat.discovery.kube import KubernetesEndpoints
    from heliostat.policy import parse_policy

    def policy(selectors: dict[str, str]) -> Any:
        models = "".join(
            f"    - name: {name}\n"
            f"      kubernetes: {{namespace: inference, match_labels: {{app: {app}}}}}\n"
            for name, app in selectors.items()
        )
        return parse_policy(
            "apiVersion: heliostat.dev/v1alpha1\nkind: InferencePolicy\nmetadata: {name: p}\n"
            "spec:\n  regions: {us-east: {}}\n  models:\n" + models
        )

    def labelled(name: str, app: str, ip: str) -> dict[str, Any]:
        item = endpoint_slice(name, [endpoint(ip)])
        item["metadata"]["labels"]["app"] = app
        return item

    api.put(SLICES, labelled("one", "vllm", "10.0.0.1"))
    api.put(SLICES, labelled("two", "sglang", "10.0.0.2"))
    changes: list[int] = []
    source = KubernetesEndpoints(
        api_client(ClusterAccess(server=api.url)), on_change=lambda: changes.append(1)
    )
    first = policy({"a": "vllm", "b": "vllm"})
    source.retarget(first)
    task = asyncio.create_task(source.run())
    try:
        for _ in range(200):
            if source.synced() and changes:
                break
            await asyncio.sleep(0.05)
        assert len(source.describe()) == 1  # two models, one selector: one watch
        for model in first.spec.models:
            found = source.endpoints(model)
            assert found is not None and [e.address for e in found.endpoints] == ["10.0.0.1:8000"]
        second = policy({"a": "sglang"})
        source.retarget(second)
        assert [w["selector"] for w in source.describe()] == ["app=sglang"]
        for _ in range(200):
            found = source.endpoints(second.spec.models[0])
            if found is not None and found.endpoints:
                break
            await asyncio.sleep(0.05)
        assert [e.address for e in found.endpoints] == ["10.0.0.2:8000"]  # type: ignore[union-attr]
        selectors = [w.query["labelSelector"] for w in api.requests if "watch" not in w.query]
        assert selectors == ["app=vllm", "app=sglang"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
