"""The DevOps group's Reader on each identity the portal makes, for clusters that turn it on (issue 11).

The platform's guide promises that the cluster's DevOps group sees every workload identity in Azure, so they can
find its IDs in the Azure portal. With `Cluster.devops_reader_on_identities` on, provisioning assigns Azure's
built-in Reader role to the DevOps group (principalType Group) at the scope of the managed identity itself: that
one resource, nothing above it. The assignment is named by the same deterministic GUID as every other the portal
makes (naming.role_assignment_name of scope, role and principal), so a retry or a run after a crash PUTs the
same one. Revocation removes it before the identity goes; drift reports it missing; a repair puts it back.

Turning the option on later does not touch identities already made until they are reconciled: reconcile reports
the Reader missing on each ready identity (`devops_reader_missing`) and a repair makes it. Turning it off later
leaves the assignments already made in place (revocation still removes them, as it removes everything it made).
"""

from __future__ import annotations

from typing import Any

from .cloud import rbac
from .models import IdentityRequest, Step

# Azure's built-in Reader role (the same GUID in every tenant; emulator/roles.py has it too).
READER_ROLE = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
READER_NAME = "Reader"

Detail = dict[str, Any]


def wanted(req: IdentityRequest) -> bool:
    """Whether the request's cluster asks for the DevOps group's Reader on its identities."""
    cluster = req.cluster
    return bool(cluster.devops_reader_on_identities and cluster.devops_group_id)


def _find(req: IdentityRequest) -> rbac.RoleAssignment | None:
    return rbac.find_assignment(req.identity_resource_id, READER_ROLE, req.cluster.devops_group_id)


STEPS = (Step.Name.DEVOPS_READER, Step.Name.REVOKE_DEVOPS_READER, Step.Name.REPAIR_DEVOPS_READER)


def hidden_step(req: IdentityRequest, step: Step) -> bool:
    """Whether the request page leaves this step out: a Reader step on a cluster without the option, that had
    nothing to do (one that waits or failed is always shown)."""
    return (
        step.name in STEPS
        and not wanted(req)
        and not req.devops_reader_assignment_id
        and step.state in (Step.State.PENDING, Step.State.SUCCEEDED)
    )


# ---- provisioning (a step that runs beside the others: no database) ---------------------------------------------


def grant(req: IdentityRequest, first: bool = False) -> Detail:
    """Give the DevOps group Reader on the identity (PUT under the deterministic name: idempotent)."""
    if not wanted(req):
        return {"devops_reader": "off for this cluster"}
    ra = rbac.assign_role(
        req.identity_resource_id,
        READER_ROLE,
        req.cluster.devops_group_id,
        role_name=f"{READER_NAME} for the DevOps group",
        principal_type="Group",
    )
    req.devops_reader_assignment_id = ra.id
    return {"role": READER_NAME, "group": req.cluster.devops_group_label, "existed": ra.existed}


def granted(req: IdentityRequest, step: Step) -> bool:
    """Still done: off for the cluster, or the assignment's ID stored (an option turned on meanwhile re-runs it)."""
    return not wanted(req) or bool(req.devops_reader_assignment_id)


def save(req: IdentityRequest) -> None:
    """Store the assignment ID `grant` put on the request (in the engine's thread, whatever the outcome)."""
    if req.devops_reader_assignment_id:
        req.save(update_fields=["devops_reader_assignment_id"])


# ---- revocation (before the identity is deleted) ---------------------------------------------------------------


def revoke(req: IdentityRequest, first: bool = False) -> Detail:
    """Remove the DevOps group's Reader: the stored one, and (when the option is on) the group's Reader found on
    the identity, in case a worker died between making it and storing its ID. Nothing made: nothing to do."""
    if not req.identity_resource_id:
        return {"devops_reader": "nothing was made"}
    ids = {req.devops_reader_assignment_id} - {""}
    if wanted(req):
        found = _find(req)
        if found is not None:
            ids.add(found.id)
    if not ids:
        return {"devops_reader": "nothing was made"}
    for assignment_id in sorted(ids):
        rbac.delete_assignment(assignment_id)  # already gone is fine
    req.devops_reader_assignment_id = ""
    req.save(update_fields=["devops_reader_assignment_id"])
    return {"devops_reader": "removed"}


# ---- drift ----------------------------------------------------------------------------------------------------


def observe(req: IdentityRequest) -> tuple[bool, rbac.RoleAssignment | None]:
    """(checked, the group's Reader on the identity): not checked when the option is off or nothing exists yet."""
    if not (wanted(req) and req.identity_resource_id):
        return False, None
    return True, _find(req)


def missing_details(req: IdentityRequest) -> tuple[str, dict[str, str]]:
    """The key and details of a `devops_reader_missing` finding (no client or principal IDs in them)."""
    cluster = req.cluster
    details = {"role": READER_NAME, "group": cluster.devops_group_label, "identity": req.identity_name}
    return f"{READER_ROLE} for {cluster.devops_group_id.lower()}", details


# ---- repair ---------------------------------------------------------------------------------------------------


def put_back(req: IdentityRequest) -> bool:
    """Make the group's Reader if it is missing (option on); True if it was written. Stores the ID either way."""
    if not (wanted(req) and req.identity_resource_id):
        return False
    found = _find(req)
    written = found is None
    if written:
        grant(req)
    else:
        req.devops_reader_assignment_id = found.id
    save(req)
    return written
