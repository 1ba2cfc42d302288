"""The fault suite's phase deadlines: a phase that hangs or fails ends the run with what is
known so far, never with a bare pytest-timeout."""

from __future__ import annotations

import threading

import pytest

from tests.faults.harness import CI_PLAN, Phases, chosen_plan


def report() -> str:
    return "events sent  12\nfaults injected  redis restart 1"


def test_a_phase_past_its_deadline_fails_with_the_report_and_its_name() -> None:
    phases = Phases(report)
    never = threading.Event()  # set at the end, so the abandoned thread ends too
    try:
        with pytest.raises(pytest.fail.Exception) as failed:
            phases.run("drain", 0.2, lambda: never.wait(30))
    finally:
        never.set()
    assert "the drain phase passed its deadline of 0 s" in str(failed.value)
    assert "events sent  12" in str(failed.value)
    assert "redis restart 1" in str(failed.value)
    assert set(phases.times) == {"drain"}


def test_a_phase_that_fails_reports_the_failure_and_what_is_known() -> None:
    def lost() -> None:
        pytest.fail("timed out after 90 s waiting for the stream to drain")

    with pytest.raises(pytest.fail.Exception) as failed:
        Phases(report).run("drain", 5, lost)
    assert "the drain phase failed: timed out after 90 s" in str(failed.value)
    assert "events sent  12" in str(failed.value)


def test_a_phase_returns_its_result_and_its_time_is_kept() -> None:
    phases = Phases(report)
    assert phases.run("setup", 5, lambda: 42) == 42
    assert set(phases.times) == {"setup"}
    assert phases.line().startswith("setup 0; total 0")


def test_every_deadline_fits_inside_the_module_timeout() -> None:
    plan = CI_PLAN
    events = int(plan.load_bound() * 400)
    phases = plan.setup + plan.load_bound() + plan.wind_down + plan.drain_deadline()
    assert phases + plan.replay_deadline(events) < plan.timeout()


def test_make_soak_sets_a_long_plan_with_more_of_every_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRICQS_FAULT_LOAD_SECONDS", "300")
    soak = chosen_plan()
    assert (soak.load_seconds, soak.min_each, soak.load_overrun) == (300.0, 15, 75.0)
    assert soak.timeout() > soak.load_bound() > CI_PLAN.load_bound()
    monkeypatch.delenv("BRICQS_FAULT_LOAD_SECONDS")
    assert chosen_plan() == CI_PLAN
