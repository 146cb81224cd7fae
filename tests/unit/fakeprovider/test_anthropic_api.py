"""The Anthropic Messages route: its headers, answers, stream events and error shape."""

from __future__ import annotations

import json

import httpx
import pytest

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
BODY = {
    "model": "fake-claude",
    "max_tokens": 100,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there, Claude"}]}],
}


async def test_message(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=BODY, headers=HEADERS)

    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["model"] == "fake-claude"
    assert message["content"] == [
        {"type": "text", "text": "This is a fake answer to: Hi there, Claude"}
    ]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 5, "output_tokens": 9}


async def test_authorization_header_is_accepted_instead_of_api_key(
    http: httpx.AsyncClient,
) -> None:
    headers = {"authorization": "Bearer k", "anthropic-version": "2023-06-01"}

    response = await http.post("/v1/messages", json=BODY, headers=headers)

    assert response.status_code == 200


async def test_stream_events_come_in_protocol_order(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "POST", "/v1/messages", json={**BODY, "stream": True}, headers=HEADERS
    ) as response:
        raw = (await response.aread()).decode()

    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in raw.strip().split("\n\n"):
        event_line, data_line = block.split("\n")
        kind = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == kind
        events.append((kind, data))
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    assert text == "This is a fake answer to: Hi there, Claude"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 9


@pytest.mark.parametrize(
    ("headers", "body", "status", "error_type"),
    [
        ({"anthropic-version": "2023-06-01"}, BODY, 401, "authentication_error"),
        ({"x-api-key": "k"}, BODY, 400, "invalid_request_error"),
        (HEADERS, {**BODY, "model": "claude-nonexistent"}, 404, "not_found_error"),
        (HEADERS, {**BODY, "messages": []}, 400, "invalid_request_error"),
        (
            HEADERS,
            {k: v for k, v in BODY.items() if k != "max_tokens"},
            400,
            "invalid_request_error",
        ),
        (
            HEADERS,
            {**BODY, "messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
    ],
)
async def test_errors_use_anthropic_shape(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    error_type: str,
) -> None:
    response = await http.post("/v1/messages", json=body, headers=headers)

    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == error_type
    assert payload["error"]["message"]


async def test_invalid_json_uses_anthropic_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", content=b"{oops", headers=HEADERS)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_injected_errors_use_anthropic_shape(http: httpx.AsyncClient) -> None:
    await http.put("/_fake/knobs", json={"outage": "503"})

    response = await http.post("/v1/messages", json=BODY, headers=HEADERS)

    assert response.status_code == 503
    assert response.json()["error"]["type"] == "overloaded_error"


TOOLS = [
    {"name": "search", "input_schema": {"type": "object"}},
    {"name": "other", "input_schema": {}},
]


async def test_offered_tools_get_a_tool_use_of_the_first(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json={**BODY, "tools": TOOLS}, headers=HEADERS)

    message = response.json()
    (use,) = message["content"]
    assert use["type"] == "tool_use"
    assert use["id"].startswith("toolu_")
    assert (use["name"], use["input"]) == ("search", {"query": "Hi there, Claude"})
    assert message["stop_reason"] == "tool_use"


async def test_tool_results_or_tool_choice_none_get_text(http: httpx.AsyncClient) -> None:
    first = (await http.post("/v1/messages", json={**BODY, "tools": TOOLS}, headers=HEADERS)).json()
    use = first["content"][0]
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": "42"}
    turns = [*BODY["messages"], {"role": "assistant", "content": [use]}]  # type: ignore[list-item]
    answered = {**BODY, "tools": TOOLS, "messages": [*turns, {"role": "user", "content": [result]}]}
    refused = {**BODY, "tools": TOOLS, "tool_choice": {"type": "none"}}

    for body in (answered, refused):
        response = await http.post("/v1/messages", json=body, headers=HEADERS)
        assert response.json()["content"] == [
            {"type": "text", "text": "This is a fake answer to: Hi there, Claude"}
        ]


@pytest.mark.parametrize("unanswered", [True, False])
async def test_tool_use_and_results_must_pair_up(http: httpx.AsyncClient, unanswered: bool) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_2", "content": "42"}
    turns = [{"role": "assistant", "content": [use]}] if unanswered else []
    last = {"role": "user", "content": "next" if unanswered else [result]}
    body = {**BODY, "messages": [*BODY["messages"], *turns, last]}  # type: ignore[list-item]

    response = await http.post("/v1/messages", json=body, headers=HEADERS)

    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert ("without `tool_result`" if unanswered else "unexpected `tool_use_id`") in message


async def test_a_streamed_tool_use_sends_its_input_in_pieces(http: httpx.AsyncClient) -> None:
    body = {**BODY, "tools": TOOLS, "stream": True}
    async with http.stream("POST", "/v1/messages", json=body, headers=HEADERS) as response:
        raw = (await response.aread()).decode()

    events = [json.loads(block.split("\ndata: ")[1]) for block in raw.strip().split("\n\n")]
    start = events[1]["content_block"]
    assert (start["type"], start["name"], start["input"]) == ("tool_use", "search", {})
    pieces = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len(pieces) == 2
    assert json.loads("".join(pieces)) == {"query": "Hi there, Claude"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
