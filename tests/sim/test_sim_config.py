"""ReplicaConfig: the policy's ``sim:`` mapping goes in by name, typos come out as errors."""

from __future__ import annotations

import pytest

from heliostat.sim import ReplicaConfig
from heliostat.sim.config import split_address
from heliostat.sim.faults import Fault, FaultKind, FaultSet


def test_from_mapping_takes_the_policy_knobs() -> None:
    cfg = ReplicaConfig.from_mapping(
        address="127.0.0.1:9101",
        region="eu-west",
        model="llama-70b",
        version="v2",
        sim={"max_num_seqs": 8, "num_gpu_blocks": 512, "block_size": 32, "speed": 4},
    )
    eng = cfg.engine_config()
    assert (eng.max_num_seqs, eng.num_gpu_blocks, eng.block_size) == (8, 512, 32)
    assert eng.speed == 4.0 and isinstance(eng.speed, float)
    assert cfg.host == "127.0.0.1" and cfg.port == 9101


@pytest.mark.parametrize(
    "sim",
    [
        {"max_num_seq": 8},  # typo
        {"speed": 0},
        {"block_size": 1.5},
        {"num_gpu_blocks": "many"},
        {"max_num_seqs": True},
    ],
)
def test_from_mapping_rejects_bad_knobs(sim: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ReplicaConfig.from_mapping(address="127.0.0.1:9101", region="r", model="m", sim=sim)


def test_addresses() -> None:
    assert split_address("[::1]:80") == ("::1", 80)
    for bad in ("localhost", ":80", "host:0", "host:x"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_fault_parsing() -> None:
    f = Fault.from_json({"kind": "slow", "factor": 3})
    assert f.kind is FaultKind.SLOW and f.factor == 3.0
    assert Fault.from_json({"kind": "error", "status": 503}).status == 503
    for bad in (
        {"kind": "explode"},
        {"kind": "error", "status": 200},
        {"kind": "slow", "factor": 0},
        {"kind": "error", "probability": 2},
        {"kind": "error", "colour": "red"},
    ):
        with pytest.raises(ValueError):
            Fault.from_json(bad)


def test_intermittent_fault_fires_about_as_often_as_asked() -> None:
    faults = FaultSet(seed=7)
    faults.set(Fault(FaultKind.ERROR, probability=0.3))
    fired = sum(faults.fires(FaultKind.ERROR) is not None for _ in range(2000))
    assert 500 < fired < 700
    assert faults.fires(FaultKind.HANG) is None
    faults.clear(FaultKind.ERROR)
    assert faults.fires(FaultKind.ERROR) is None
