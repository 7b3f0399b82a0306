"""The runner: one broken check never stops the others, never shows a trace (O4)."""

from __future__ import annotations

import json

import pytest

from garrison import doctor
from garrison.doctor import DoctorContext, Status, report
from garrison.doctor.checklist import CHECKLIST
from garrison.doctor.model import About, Area, Outcome, Skip, failed, passed, warned
from garrison.doctor.registry import Checks
from tests.unit.doctor.conftest import LoadSettings


def _specs() -> Checks:
    checklist = {
        "t.ok": About("fine", seeds=("001",), reqs=("O4",), fix="nothing"),
        "t.boom": About("raises", seeds=("001",), reqs=("O4",), fix="the spec's fix"),
        "t.skip": About("cannot run", seeds=("004",), reqs=("O4",), fix="n/a"),
        "t.warn": About("soft", seeds=("000",), reqs=("O4",), fix="the spec's fix"),
        "t.fail": About("hard", seeds=("000",), reqs=("O4",), fix="the spec's fix"),
    }
    checks = Checks(Area.OPERATIONS, checklist)

    @checks.add("t.ok")
    def ok(_ctx: DoctorContext) -> Outcome:
        return passed("all good")

    @checks.add("t.boom")
    def boom(_ctx: DoctorContext) -> Outcome:
        raise RuntimeError("disk on fire\n  at line 3")

    @checks.add("t.skip")
    def skip(_ctx: DoctorContext) -> Outcome:
        raise Skip("no database here")

    @checks.add("t.warn")
    def warn(_ctx: DoctorContext) -> Outcome:
        return warned("meh")

    @checks.add("t.fail")
    def fail(_ctx: DoctorContext) -> Outcome:
        return failed("broken", "a specific fix")

    return checks


@pytest.mark.req("O4")
def test_an_erroring_check_fails_with_its_message_and_the_run_goes_on(load: LoadSettings) -> None:
    results = {c.id: c for c in doctor.run(DoctorContext(load()), _specs().specs)}
    assert [c.status for c in results.values()] == [
        Status.PASS,
        Status.FAIL,
        Status.SKIP,
        Status.WARN,
        Status.FAIL,
    ]
    assert results["t.boom"].finding == "check errored: RuntimeError: disk on fire at line 3"
    assert results["t.boom"].fix == "the spec's fix"
    assert results["t.skip"].finding == "no database here"
    assert results["t.ok"].fix == ""
    assert results["t.skip"].fix == ""
    assert results["t.fail"].fix == "a specific fix"  # a finding's own fix wins over the spec's


@pytest.mark.req("O4")
def test_exit_code_fails_only_on_fail(load: LoadSettings) -> None:
    specs = _specs().specs
    results = doctor.run(DoctorContext(load()), specs)
    assert doctor.exit_code(results) == 1
    gentle = [s for s in specs if s.id in {"t.ok", "t.skip", "t.warn"}]
    assert doctor.exit_code(doctor.run(DoctorContext(load()), gentle)) == 0


@pytest.mark.req("O4")
def test_json_report_is_a_machine_readable_list(load: LoadSettings) -> None:
    results = doctor.run(DoctorContext(load()), _specs().specs)
    data = json.loads(json.dumps(report.as_json(results)))
    assert data["ok"] is False
    assert data["summary"] == {"pass": 1, "warn": 1, "fail": 2, "skip": 1}
    first = data["checks"][0]
    assert set(first) == {
        "id", "scope", "area", "title", "seeds", "requirements", "status", "finding", "fix"
    }  # fmt: skip
    assert first["scope"] == "local"  # no --url: every check judges this machine
    assert first["status"] == "pass"
    assert first["requirements"] == ["O4"]


@pytest.mark.req("O4")
def test_catalogue_ids_are_unique_and_every_check_names_seeds_and_requirements() -> None:
    specs = doctor.catalogue()
    ids = [s.id for s in specs]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(CHECKLIST)  # every checklist entry has its function, and no more
    known_seeds = {"000", "001", "002", "003", "004"}
    for spec in specs:
        assert spec.id.startswith(spec.area.value + "."), spec.id
        assert spec.seeds, spec.id
        assert set(spec.seeds) <= known_seeds, spec.id
        assert spec.requirements, spec.id
        assert spec.fix, spec.id
    # the report groups in this order
    areas = [s.area for s in specs]
    assert areas == sorted(areas, key=list(Area).index)
