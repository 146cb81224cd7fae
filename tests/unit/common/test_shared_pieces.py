"""The small shared pieces in common/: timestamps, the config-error exit, OpenAI errors, net."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from llmproxy.authz.errors import KeyRevokedError
from llmproxy.common.errors import ConfigError, exit_on_config_error
from llmproxy.common.limits_file import LimitsConfigError
from llmproxy.common.net import free_port, free_port_block, is_ip
from llmproxy.common.openai_errors import OpenAIError, error_object
from llmproxy.common.timestamps import duration, optional_timestamp, seconds, timestamp
from llmproxy.router.errors import ModelNotFoundError


@pytest.mark.parametrize("value", [0.3, 1_700_000_000.123456789, 0.0, 2.5e-9])
def test_timestamps_round_trip_to_the_nanosecond(value: float) -> None:
    assert seconds(timestamp(value)) == pytest.approx(value, abs=1e-9)
    # 0.3 s is 299999999.99… ns as a float: rounding keeps it whole, truncating would not.
    assert timestamp(0.3).nanos == 300_000_000
    assert duration(0.3).nanos == 300_000_000


def test_an_unset_time_stays_unset() -> None:
    assert optional_timestamp(None) is None
    stamp = optional_timestamp(12.5)
    assert stamp is not None
    assert seconds(stamp) == 12.5


def test_a_config_error_exits_2_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised, exit_on_config_error("llmproxy.test"):
        raise ConfigError("services.router.grpc_port: Input should be a valid integer")
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err == "llmproxy.test: services.router.grpc_port: Input should be a valid integer\n"


def test_other_errors_pass_through_the_config_error_exit() -> None:
    with pytest.raises(ValueError, match="not a config error"), exit_on_config_error("x"):
        raise ValueError("not a config error")


def test_every_startup_config_error_is_a_config_error() -> None:
    # run_service catches ConfigError once; these reach it from inside serve().
    assert issubclass(LimitsConfigError, ConfigError)


def test_router_errors_and_authz_denials_share_one_body() -> None:
    assert issubclass(ModelNotFoundError, OpenAIError)
    assert json.loads(ModelNotFoundError("gpt-9").body()) == error_object(
        "The model 'gpt-9' does not exist or you do not have access to it.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )
    denied = json.loads(KeyRevokedError("key k1 is revoked").body())["error"]
    assert denied["code"] == "api_key_revoked"
    assert list(denied) == ["message", "type", "param", "code"]


@pytest.mark.parametrize(
    ("host", "ip"), [("127.0.0.1", True), ("::1", True), ("api.openai.com", False), ("", False)]
)
def test_is_ip(host: str, ip: bool) -> None:
    assert is_ip(host) is ip


def test_free_port_is_bindable_and_never_handed_out_twice() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_free_port_block_is_consecutive_and_bindable() -> None:
    base = free_port_block(5)
    with contextlib.ExitStack() as stack:
        for port in range(base, base + 5):
            stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
