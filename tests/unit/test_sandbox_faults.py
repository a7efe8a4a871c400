"""The game-day fault catalogue and injector, on their own (no server)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox.faults import CATALOGUE, Call, FaultInjector

DEV = "536580886816"


def call(
    method: str, path: str, service: str = "s3", target: str = "", region: str = "af-south-1", **args: str
) -> Call:
    return Call(service=service, account=DEV, region=region, method=method, path=path, args=args, target=target)


@dataclass
class Switchable:
    log: list[str] = field(default_factory=list)

    def pause(self) -> None:
        self.log.append("pause")

    def resume(self) -> None:
        self.log.append("resume")


def test_every_runbook_criterion_has_a_fault_with_its_expected_outcome() -> None:
    by_criterion = {f.criterion: f.expected for f in CATALOGUE}
    rollback = ("dataLossRisk", "securityExposure", "serviceUnavailable", "replicationFailure", "configurationError")
    assert all(by_criterion[c] == "ROLLED_BACK" for c in (*rollback, "resourceExhaustion"))
    fix_forward = ("transientConnectivity", "monitoringGap", "documentationIssue", "performanceDegradation")
    assert all(by_criterion[c] == "SUCCEEDED_WITH_WARNINGS" for c in fix_forward)
    replication = next(f for f in CATALOGUE if f.criterion == "replicationFailure")
    assert replication.environments == ("prod",)


def test_faults_answer_only_the_calls_they_are_about() -> None:
    faults = {f.name: f for f in CATALOGUE}
    validation_put = call("PUT", "/bbws-dev-data-bucket/_deployer/validation/d1.txt")
    assert faults["validation-writes-fail"].answer(validation_put).status_code == 400  # type: ignore[union-attr]
    assert faults["validation-writes-fail"].answer(call("PUT", "/bbws-dev-data-bucket/sites/a.json")) is None
    assert faults["bucket-limit-reached"].answer(call("PUT", "/bbws-new-bucket")).status_code == 400  # type: ignore[union-attr]
    assert faults["bucket-limit-reached"].answer(call("PUT", "/bbws-new-bucket", versioning="")) is None
    tagging = call("PUT", "/bbws-dev-data-bucket", tagging="")
    assert faults["tags-not-applied"].answer(tagging).status_code == 200  # type: ignore[union-attr]


def test_a_flaky_write_fails_once_then_goes_through() -> None:
    flaky = next(f for f in CATALOGUE if f.name == "flaky-network")
    put = call("PUT", "/bbws-dev-data-bucket/_deployer/validation/flaky-test.txt")
    assert flaky.answer(put).status_code == 503  # type: ignore[union-attr]
    assert flaky.answer(put) is None


def test_switch_faults_pause_the_emulations_until_cleared() -> None:
    emulation = Switchable()
    injector = FaultInjector(switched={"s3_replication": emulation, "dynamodb_replicas": emulation})
    injector.inject("replication-stalled")
    assert emulation.log == ["pause", "pause"]
    injector.clear()
    assert emulation.log == ["pause", "pause", "resume", "resume"]
    assert injector.active == set()


def test_a_hung_create_in_the_failover_region_is_answered_503_when_the_fault_is_cleared() -> None:
    injector = FaultInjector()
    hang = injector.inject("provisioning-hangs").answer
    # Another region, another call: not this fault's
    assert hang(call("PUT", "/bbws-prod-new")) is None
    assert hang(call("PUT", "/bbws-prod-new-failover", region="eu-west-1", versioning="")) is None
    # A create in the failover region waits until the fault is cleared, then fails
    answers: list[Any] = []
    create = call("POST", "/", service="dynamodb", target="DynamoDB_20120810.CreateTable", region="eu-west-1")
    waiting = threading.Thread(target=lambda: answers.append(hang(create)))
    waiting.start()
    injector.clear()
    waiting.join(timeout=60)
    assert [a.status_code for a in answers] == [500]
    # ... and once cleared it holds nothing back (a forgotten fault never holds a thread)
    assert hang(call("PUT", "/bbws-prod-new-failover", region="eu-west-1")).status_code == 503  # type: ignore[union-attr]


def test_an_unknown_fault_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(KeyError, match="validation-writes-fail"):
        FaultInjector().inject("no-such-fault")
