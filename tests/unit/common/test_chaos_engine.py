"""The chaos agent's engine: bounds, one stress per experiment, undoing at expiry, clear, close."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from llmproxy.common.chaos.engine import (
    CpuStress,
    MemoryStress,
    Stress,
    StressEngine,
    StressLimits,
)
from llmproxy.common.chaos.errors import InvalidStress, OverBudget
from llmproxy.common.chaos.workers import CpuBurner, MemoryHog, available_megabytes
from tests.harness.waiting import eventually


class FakeWorker:
    def __init__(self, stress: Stress) -> None:
        self.stress = stress
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


class Workers:
    """Starts FakeWorkers and remembers them; can be told to fail like mmap does."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []
        self.fail = False

    def __call__(self, stress: Stress) -> FakeWorker:
        if self.fail:
            raise OSError(12, "Cannot allocate memory")
        worker = FakeWorker(stress)
        self.started.append(worker)
        return worker


@pytest.fixture
def workers() -> Workers:
    return Workers()


@pytest.fixture
def engine(workers: Workers) -> StressEngine:
    return StressEngine(StressLimits(), start=workers, available_mb=lambda: 100_000)


async def active_names(engine: StressEngine) -> list[str]:
    return [a.experiment for a in engine.active()]


def gauge(kind: str) -> float:
    return REGISTRY.get_sample_value("llmproxy_chaos_stress_active", {"kind": kind}) or 0.0


def test_apply_starts_a_worker_and_lists_it(engine: StressEngine, workers: Workers) -> None:
    cpu_before = gauge("cpu")
    active, replaced = engine.apply("exp-1", CpuStress(0.5), 60)
    assert not replaced
    assert active.stress == CpuStress(0.5)
    assert 59 < active.remaining_s(time.monotonic()) <= 60
    assert engine.active() == [active]
    assert workers.started[0].stress == CpuStress(0.5)
    assert gauge("cpu") == cpu_before + 1
    engine.clear()


def test_reapply_replaces_the_experiments_stress(engine: StressEngine, workers: Workers) -> None:
    engine.apply("exp-1", CpuStress(0.5), 60)
    memory_before = gauge("memory")
    active, replaced = engine.apply("exp-1", MemoryStress(16), 60)
    assert replaced
    assert workers.started[0].stops == 1
    assert engine.active() == [active]
    assert gauge("memory") == memory_before + 1
    engine.clear()


async def test_the_engine_undoes_a_stress_at_expiry(engine: StressEngine, workers: Workers) -> None:
    before = gauge("cpu")
    engine.apply("short", CpuStress(0.2), 0.1)
    engine.apply("long", CpuStress(0.2), 60)
    await eventually(
        lambda: active_names(engine), lambda names: names == ["long"], what="short expired"
    )
    assert workers.started[0].stops == 1
    assert workers.started[1].stops == 0
    assert gauge("cpu") == before + 1
    engine.clear()


async def test_a_replaced_stress_timer_does_not_undo_its_successor(
    engine: StressEngine, workers: Workers
) -> None:
    engine.apply("exp", CpuStress(0.2), 0.05)
    engine.apply("exp", CpuStress(0.3), 60)
    # A witness expiring later than the first stress would have: once it is gone, that timer's
    # time has come and gone too (it was cancelled, or the successor would be undone).
    engine.apply("witness", CpuStress(0.1), 0.2)
    await eventually(
        lambda: active_names(engine), lambda names: names == ["exp"], what="the witness expired"
    )
    assert [a.stress for a in engine.active()] == [CpuStress(0.3)]
    assert workers.started[1].stops == 0
    engine.clear()


def test_clear_one_or_all(engine: StressEngine, workers: Workers) -> None:
    for name in ("a", "b", "c"):
        engine.apply(name, MemoryStress(1), 60)
    assert [c.experiment for c in engine.clear("b")] == ["b"]
    assert engine.clear("no-such") == []
    assert [c.experiment for c in engine.clear()] == ["a", "c"]
    assert engine.active() == []
    assert [w.stops for w in workers.started] == [1, 1, 1]


async def test_close_undoes_everything(engine: StressEngine, workers: Workers) -> None:
    engine.apply("a", CpuStress(0.1), 60)
    engine.apply("b", MemoryStress(1), 60)
    await engine.close()
    assert engine.active() == []
    assert all(w.stops == 1 for w in workers.started)


@pytest.mark.parametrize(
    ("stress", "duration_s", "message"),
    [
        (CpuStress(0), 60, "cpu.cores must be > 0 and <= 1 (the agent's cap), got 0"),
        (CpuStress(-0.5), 60, "cpu.cores must be > 0 and <= 1"),
        (CpuStress(1.5), 60, "cpu.cores must be > 0 and <= 1 (the agent's cap), got 1.5"),
        (CpuStress(math.nan), 60, "cpu.cores must be > 0"),
        (MemoryStress(0), 60, "memory.megabytes must be > 0 and <= 1024"),
        (MemoryStress(4096), 60, "memory.megabytes must be > 0 and <= 1024 (the agent's cap)"),
        (CpuStress(0.5), 0, "duration must be > 0 s and <= 3600 s"),
        (CpuStress(0.5), 7200, "duration must be > 0 s and <= 3600 s (the agent's cap), got 7200"),
        (CpuStress(0.5), math.inf, "duration must be > 0 s"),
    ],
)
def test_out_of_bounds_stress_is_refused_naming_field_and_cap(
    engine: StressEngine, workers: Workers, stress: Stress, duration_s: float, message: str
) -> None:
    with pytest.raises(InvalidStress, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.apply("exp", stress, duration_s)
    assert workers.started == []
    assert engine.active() == []


def test_stresses_of_all_experiments_share_the_caps(engine: StressEngine) -> None:
    engine.apply("a", CpuStress(0.6), 60)
    with pytest.raises(OverBudget, match=r"cpu.cores 0.6 with 0.6 held by other experiments"):
        engine.apply("b", CpuStress(0.6), 60)
    engine.apply("a", CpuStress(0.9), 60)  # replacing its own stress does not count twice
    engine.apply("m", MemoryStress(1000), 60)
    with pytest.raises(OverBudget, match="passes the agent's cap of 1024 MB"):
        engine.apply("n", MemoryStress(100), 60)
    assert sorted(a.experiment for a in engine.active()) == ["a", "m"]
    engine.clear()


def test_memory_stress_never_takes_more_than_half_the_available_memory(workers: Workers) -> None:
    engine = StressEngine(start=workers, available_mb=lambda: 100)
    with pytest.raises(OverBudget, match="more than 50% of the machine's available 100 MB"):
        engine.apply("m", MemoryStress(51), 60)
    engine.apply("m", MemoryStress(50), 60)
    engine.clear()


def test_a_worker_that_cannot_start_leaves_nothing_behind(
    engine: StressEngine, workers: Workers
) -> None:
    before = gauge("memory")
    workers.fail = True
    with pytest.raises(OverBudget, match="could not allocate the memory stress"):
        engine.apply("m", MemoryStress(10), 60)
    assert engine.active() == []
    assert gauge("memory") == before


def test_real_workers_start_and_stop_idempotently() -> None:
    burner = CpuBurner(0.5)
    hog = MemoryHog(4)
    assert any(t.name == "chaos-cpu-burner" for t in threading.enumerate())
    for _ in range(2):
        burner.stop()
        hog.stop()
    assert not any(t.name == "chaos-cpu-burner" for t in threading.enumerate())


def test_available_megabytes_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048000 kB\nMemAvailable:  1024000 kB\n")
    assert available_megabytes(meminfo) == 1000
    assert available_megabytes(tmp_path / "missing") is None
