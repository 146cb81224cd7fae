"""The chaos agent's messages: validated into engine stresses, and stresses back into messages."""

from __future__ import annotations

from dataclasses import dataclass

from llmproxy._gen.fault.v1 import agent_pb2
from llmproxy.common.chaos.engine import ActiveStress, CpuStress, MemoryStress, Stress
from llmproxy.common.chaos.errors import InvalidStress
from llmproxy.common.timestamps import duration as to_duration
from llmproxy.common.timestamps import seconds

MAX_EXPERIMENT_CHARS = 128


@dataclass(frozen=True)
class StressOrder:
    """A well-formed ApplyStressRequest; the engine checks its bounds."""

    experiment: str
    stress: Stress
    duration_s: float


def parse_apply(request: agent_pb2.ApplyStressRequest) -> StressOrder:
    """The order an ApplyStressRequest gives; InvalidStress names the missing or bad field."""
    experiment = parse_experiment(request.experiment, required=True)
    kind = request.WhichOneof("stress")
    stress: Stress
    if kind == "cpu":
        stress = CpuStress(request.cpu.cores)
    elif kind == "memory":
        stress = MemoryStress(request.memory.megabytes)
    else:
        raise InvalidStress("stress is required: set cpu or memory")
    if not request.HasField("duration"):
        raise InvalidStress("duration is required")
    duration = request.duration
    if (duration.seconds < 0 < duration.nanos) or (duration.nanos < 0 < duration.seconds):
        raise InvalidStress("duration is malformed: seconds and nanos differ in sign")
    return StressOrder(experiment, stress, seconds(duration))


def parse_experiment(experiment: str, *, required: bool) -> str:
    """An experiment name as given, checked for presence and length."""
    if required and not experiment:
        raise InvalidStress("experiment is required")
    if len(experiment) > MAX_EXPERIMENT_CHARS:
        raise InvalidStress(f"experiment must be at most {MAX_EXPERIMENT_CHARS} characters")
    return experiment


def to_message(active: ActiveStress, now: float) -> agent_pb2.ActiveStress:
    """An ActiveStress message with the time left at `now` (time.monotonic())."""
    remaining = to_duration(active.remaining_s(now))
    message = agent_pb2.ActiveStress(experiment=active.experiment, remaining=remaining)
    if isinstance(active.stress, CpuStress):
        message.cpu.cores = active.stress.cores
    else:
        message.memory.megabytes = active.stress.megabytes
    return message
