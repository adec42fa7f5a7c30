"""Service teams' clients through a real gateway: the official `openai` Python client
against an Envoy configured by heliostat, simulated vLLM replicas behind it.

`GET /v1/models` is answered by the gateway itself (a direct response heliostat pushes), so
it works in every region, even one without GPUs; a body that is not JSON gets OpenAI's 400
`invalid_request_error`; chat, streamed chat and completions reach the replicas with the
model taken from the body.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from tests.e2e.harness import LOCALHOST, Process

pytestmark = pytest.mark.envoy

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running: list[Process] = []
    try:
        # ap-southeast has no replica: its gateway still lists the models.
        yield start_mesh(
            tmp_path_factory.mktemp("openai"),
            running,
            per_region={"us-east": 1, "eu-west": 1},
            slots=4,
            speed=8.0,
        )
    finally:
        for process in reversed(running):
            process.stop()


def client(mesh: Mesh, region: str) -> object:
    return openai.OpenAI(
        base_url=f"http://{LOCALHOST}:{mesh.gateways[region]}/v1",
        api_key="not-checked",
        max_retries=0,
        timeout=20,
    )


def received(mesh: Mesh) -> int:
    return sum(stats["received"] for stats in mesh.stats().values())


def test_models_list_is_answered_by_every_gateway(mesh: Mesh) -> None:
    before = received(mesh)
    for region in mesh.gateways:
        models = client(mesh, region).models.list()  # type: ignore[attr-defined]
        assert [m.id for m in models.data] == [MODEL]
        assert models.data[0].object == "model" and models.data[0].owned_by == "heliostat"
    assert received(mesh) == before  # no hop to any replica


def test_chat_stream_and_completion_reach_the_replicas(mesh: Mesh) -> None:
    api = client(mesh, "us-east")
    before = received(mesh)
    chat = api.chat.completions.create(  # type: ignore[attr-defined]
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert chat.choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in api.chat.completions.create(  # type: ignore[attr-defined]
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
        )
        if chunk.choices
    ]
    assert len(pieces) > 1 and "".join(pieces)
    completion = api.completions.create(model=MODEL, prompt="hello", max_tokens=8)  # type: ignore[attr-defined]
    assert completion.choices[0].text
    assert received(mesh) == before + 3


def test_an_unknown_model_is_a_404_the_client_understands(mesh: Mesh) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client(mesh, "eu-west").chat.completions.create(  # type: ignore[attr-defined]
            model="gpt-nope", messages=[{"role": "user", "content": "hello"}]
        )
    error = raised.value.body
    assert isinstance(error, dict) and error["type"] == "model_not_found"
    assert error["models"] == [MODEL]


def test_a_body_that_is_not_json_is_a_400_invalid_request_error(mesh: Mesh) -> None:
    before = received(mesh)
    connection = http.client.HTTPConnection(LOCALHOST, mesh.gateways["eu-west"], timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=b'{"model": "llama-70b", "messages": [',
            headers={"content-type": "application/json"},
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 400
    assert response.getheader("content-type") == "application/json"
    assert payload["error"]["type"] == "invalid_request_error"
    assert received(mesh) == before  # refused at the gateway
