"""GET /v1/models answers an Anthropic client (anthropic-version sent) in Anthropic's shape."""

from __future__ import annotations

import json

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import STATUS_HEADER
from tests.unit.router.test_service import Context, Harness

ANTHROPIC = {"anthropic-version": "2023-06-01"}


async def test_an_anthropic_client_gets_anthropics_model_list() -> None:
    servicer = Harness().servicer
    reply = await servicer.ListOpenAIModels(
        openai_pb2.ListOpenAIModelsRequest(), Context(ANTHROPIC)
    )
    page = json.loads(reply.data)
    assert page["data"] == [
        {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
        for name in ("m", "m-alias")
    ]
    assert (page["has_more"], page["first_id"], page["last_id"]) == (False, "m", "m-alias")


async def test_an_openai_client_still_gets_openais_list() -> None:
    servicer = Harness().servicer
    reply = await servicer.ListOpenAIModels(openai_pb2.ListOpenAIModelsRequest(), Context())
    assert json.loads(reply.data)["object"] == "list"


async def test_one_model_and_a_missing_one_in_anthropics_shape() -> None:
    servicer = Harness().servicer
    found = await servicer.GetModel(openai_pb2.GetModelRequest(model="m"), Context(ANTHROPIC))
    assert json.loads(found.data)["type"] == "model"
    context = Context(ANTHROPIC)
    missing = await servicer.GetModel(openai_pb2.GetModelRequest(model="nope"), context)
    assert context.metadata[STATUS_HEADER] == "404"
    body = json.loads(missing.data)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "'nope'" in body["error"]["message"]
