"""The alert rules file (L6): valid YAML of the Prometheus shape, naming only metrics we serve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, via uvicorn[standard]

from garrison.observability.metrics import Metrics

ALERTS = Path(__file__).parents[3] / "deploy" / "prometheus" / "alerts.yml"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _served() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in _SUFFIXES)
    return names


@pytest.mark.req("L6")
def test_every_rule_has_the_prometheus_shape() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "GarrisonAuthFailureSpike",
        "GarrisonHigh5xxRate",
        "GarrisonAdminAction",
        "GarrisonPolicyDenySpike",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


@pytest.mark.req("L6")
def test_rules_name_only_metrics_that_metrics_serves() -> None:
    served = _served()
    for rule in _rules():
        for name in re.findall(r"\bgarrison_[a-z_]+", rule["expr"]):
            assert name in served, f"{rule['alert']}: {name} is not exported"
