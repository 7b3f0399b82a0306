"""Audit and observability checks: a persistent log, an intact chain, tracing (L1, L7, L9)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from garrison.audit.chain import ChainKey
from garrison.audit.head import AuditSeal, HeadFile
from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, warned
from garrison.doctor.registry import Checks
from garrison.keys.sealing import derive_key

checks = Checks(Area.AUDIT)


@checks.add("audit.persistent-log")
def persistent_log(ctx: DoctorContext) -> Outcome:
    db = ctx.database()
    with db.engine.connect() as conn:
        has_table = sa.inspect(conn).has_table("audit_log")
    if not has_table:
        return failed("no audit_log table in the database")
    path = ctx.settings.audit_log_path
    if path is None:
        return passed("database audit log (no JSON-lines copy: AUDIT_LOG_PATH unset)")
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable:
        return failed(f"AUDIT_LOG_PATH {path} is not writable by this user")
    return passed(f"database audit log, and a JSON-lines copy at {path}")


def _verifier() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(verify_chain, stored_public_keys)`` when this build has the audit verifier (L7)."""
    try:
        verify = importlib.import_module("garrison.audit.verify")
        checkpoint = importlib.import_module("garrison.audit.checkpoint")
        return verify.verify_chain, checkpoint.stored_public_keys
    except (ImportError, AttributeError):
        raise Skip("audit verify unavailable") from None


def _seal(ctx: DoctorContext) -> AuditSeal:
    """The audit key and head file, read only (the doctor never makes a key file)."""
    settings = ctx.settings
    if settings.audit_key is not None:
        secret = settings.audit_key.get_secret_value()
    else:
        path = settings.data_dir / "audit.key"
        if settings.production or not path.is_file():
            raise Skip("GARRISON_AUDIT_KEY unset: the keyed chain cannot be checked")
        secret = path.read_text().strip()
    key = ChainKey(derive_key(secret, b"audit-chain"))
    head = settings.audit_head_path or settings.data_dir / "audit-head.json"
    return AuditSeal(key, HeadFile(head, key))


@checks.add("audit.chain")
def chain(ctx: DoctorContext) -> Outcome:
    verify_chain, stored_public_keys = _verifier()
    seal = _seal(ctx)
    db = ctx.database()
    report = verify_chain(db, stored_public_keys(db), seal)
    if not report.ok:
        return failed(f"broken at record {report.first_bad_seq}: {report.problem}")
    return passed(f"{report.checked} record(s) verified, head {report.head_seq}")


@checks.add("audit.tracing")
def tracing(ctx: DoctorContext) -> Outcome:
    endpoint = ctx.settings.otel_endpoint
    if not endpoint:
        return warned("OTEL_EXPORTER_OTLP_ENDPOINT unset: no traces leave the process")
    return passed(f"OTLP endpoint {endpoint}")
