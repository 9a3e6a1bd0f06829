"""Drift: what Azure and the cluster hold now, compared with what was approved for a ready request.

Split along its jobs: `compare` looks (reads only), `describe` says it for people, `reconcile` records findings
and runs the periodic checks, and repairing is an operation of the engine (requests_app.repairing).
"""

from .compare import Finding, Observed, check_request, compare, observe, principal_assignments, role_key
from .describe import describe
from .reconcile import (
    Summary,
    enqueue_reconcile_all,
    open_by_kind,
    reconcile_all,
    reconcile_clusters,
    reconcile_one,
    reconcile_request,
    record_findings,
    request_reconcile_all,
    to_reconcile,
)

__all__ = [
    "Finding",
    "Observed",
    "Summary",
    "check_request",
    "compare",
    "describe",
    "enqueue_reconcile_all",
    "observe",
    "open_by_kind",
    "principal_assignments",
    "reconcile_all",
    "reconcile_clusters",
    "reconcile_one",
    "reconcile_request",
    "record_findings",
    "request_reconcile_all",
    "role_key",
    "to_reconcile",
]

# Repairing is an operation of the engine (requests_app.repairing); its entry points are named here too.
from ..repairing import repair, request_repair, run_repair  # noqa: E402

__all__ += ["repair", "request_repair", "run_repair"]
