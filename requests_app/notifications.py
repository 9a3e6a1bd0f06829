"""Notices: who hears of what happens to a request, by e-mail and through the cluster's chat webhook.

| event (kind)        | e-mail to                                          | cluster webhook |
|---------------------|----------------------------------------------------|-----------------|
| `request_submitted` | the approvers, except the requester                | yes             |
| `request_decided`   | the requester (approved, or rejected with why)     | no              |
| `request_ready`     | the requester, and the cluster's DevOps members    | yes             |
| `request_failed`    | the requester, and the admins                      | yes             |
| `request_revoked`   | the requester, and the cluster's DevOps members    | no              |
| `change_submitted`  | the approvers, except who asked for the change     | yes             |
| `change_decided`    | the requester, and who asked for the change        | no              |
| `change_applied`    | the requester, and who asked for the change        | no              |
| `change_failed`     | the requester, and who asked for the change        | no              |
| `identity_expiring` | the requester, and the owning group's members      | yes             |
| `identity_suspended`| the requester, and the owning group's members      | yes             |
| `requester_left`    | the admins                                         | no              |
| `move_submitted`    | the approvers, except who asked for the move       | yes             |
| `move_decided`      | the requester, and who asked for the move          | no              |
| `move_applied`      | the requester, and who asked for the move          | no              |
| `move_failed`       | the requester, and who asked for the move          | no              |
| `refederation_failed` | the admins, and the cluster's DevOps members     | no              |
| `cluster_issuer_changed` | the admins, and the cluster's DevOps members  | no              |

`cluster_issuer_changed` is about a cluster, not one request (CLUSTER_NOTICES: its jobs carry the cluster's id):
reconcile found Azure reporting a new OIDC issuer for it, once per new issuer (clusters.reconcile_connection).

(`identity_expiring` to `requester_left`: issue 11 lifecycle, lifecycle.py. A requester whose account Entra
disabled or deleted is mailed nothing any more; the owning team still is.)

Approvers, admins and DevOps members are read from Entra through Graph when the notice is sent (cloud/graph.py
`people`: members of the configured groups and holders of the configured app roles, nested groups included,
disabled accounts left out), never from who has signed in: the first request of a new portal reaches its
approvers. Someone in two audiences of one event gets one e-mail: the requester's, whatever else they are.

Each (event, audience) pair is one job (`jobs.send_mail`), and the webhook post another (`jobs.post_webhook`),
so a retry of one never repeats another that went out. Messages are rendered when the job runs; an SMTP, Graph
or webhook error raises so that RQ retries the job. Each e-mail is a template triplet under templates/emails/:
`<name>_subject.txt`, `<name>.txt`, `<name>.html` (on `emails/base.html`). Client and principal IDs never go
into a notice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from .cloud import graph, identities, webhooks
from .models import ChangeRequest, Cluster, IdentityRequest, MoveRequest, Status, Step

log = logging.getLogger(__name__)

REQUESTER, APPROVERS, ADMINS, DEVOPS = "requester", "approvers", "admins", "devops"
ASKER = "asker"  # issue 11 changes: who asked for the identity's latest change (when not its requester)
OWNERS = "owners"  # issue 11 lifecycle: the members of the identity's owning group
MOVER = "mover"  # issue 11 loose ends: who asked for the identity's latest move (when not its requester)

# Who hears of each event, by e-mail.
NOTICES: dict[str, tuple[str, ...]] = {
    "request_submitted": (APPROVERS,),
    "request_decided": (REQUESTER,),
    "request_ready": (REQUESTER, DEVOPS),
    "request_failed": (REQUESTER, ADMINS),
    "request_revoked": (REQUESTER, DEVOPS),
    # issue 11 changes: a change request's life (the identity's latest change).
    "change_submitted": (APPROVERS,),
    "change_decided": (REQUESTER, ASKER),
    "change_applied": (REQUESTER, ASKER),
    "change_failed": (REQUESTER, ASKER),
    # issue 11 lifecycle
    "identity_expiring": (REQUESTER, OWNERS),
    "identity_suspended": (REQUESTER, OWNERS),
    "requester_left": (ADMINS,),
    # issue 11 loose ends: a move's life (the identity's latest move), a re-federation that stopped, and a
    # cluster whose issuer changed (about the cluster: CLUSTER_NOTICES).
    "move_submitted": (APPROVERS,),
    "move_decided": (REQUESTER, MOVER),
    "move_applied": (REQUESTER, MOVER),
    "move_failed": (REQUESTER, MOVER),
    "refederation_failed": (ADMINS, DEVOPS),
    "cluster_issuer_changed": (ADMINS, DEVOPS),
}
# Notices about a cluster rather than one request: their jobs carry the cluster's primary key.
CLUSTER_NOTICES = ("cluster_issuer_changed",)
# One text for every audience (no `<kind>_<audience>` variant).
ONE_TEXT = (
    "identity_expiring",
    "identity_suspended",
    "requester_left",
    "refederation_failed",
    "cluster_issuer_changed",
)
# The events a cluster's chat channel hears of: work waiting for someone (a new request to approve, an identity
# to use, a failure to look at). Decisions and revocations concern the requester and are mailed only.
WEBHOOK_EVENTS = (
    "request_submitted",
    "request_ready",
    "request_failed",
    "change_submitted",  # issue 11 changes: a change waits for an approver like a new request
    "identity_expiring",
    "identity_suspended",
    "move_submitted",  # issue 11 loose ends: a move waits for an approver like a new request
)

# Why each audience gets the e-mail (its last line).
REASONS = {
    REQUESTER: "You get this because you asked for this identity.",
    APPROVERS: "You get this because you approve workload identity requests.",
    ADMINS: "You get this because you administer the Workload Identity Portal.",
    DEVOPS: "You get this because you are in the DevOps group of the cluster {cluster}.",
    ASKER: "You get this because you asked for this change.",
    OWNERS: "You get this because you are in the team that owns this identity.",
    MOVER: "You get this because you asked for this move.",
}


def send(kind: str, request_id: uuid.UUID, audience: str) -> None:
    """E-mail `audience` about `kind` of the request (nothing when nobody in it has an address)."""
    if audience not in NOTICES[kind]:
        raise ValueError(f"{kind} is not sent to {audience}")
    if kind in CLUSTER_NOTICES:
        _send_about_cluster(kind, int(str(request_id)), audience)
        return
    req = _load(request_id)
    to = _addresses(audience, req, kind)
    if not to:
        log.info("%s of request %s: no %s to mail", kind, request_id, audience)
        return
    template = _template(kind, audience, req)
    ctx = {
        "req": req,
        # issue 11: a reminder (or a suspension) links to the panel where an owner re-confirms (or resumes) it.
        "url": request_url(req) + ("#lifecycle" if kind in ("identity_expiring", "identity_suspended") else ""),
        "reason": REASONS[audience].format(cluster=req.cluster),
        "facts": _facts(req),
    }
    if kind.startswith("change_"):
        ctx["change"] = _latest_change(req)
    if kind.startswith("move_"):  # issue 11 loose ends
        ctx["move"] = move = _latest_move(req)
        ctx["move_error"] = identities.scrub(move.failure_message) if move else ""  # Azure's errors quote IDs
    if kind == "refederation_failed":
        ctx["failed"] = failed = Step.objects.filter(
            request=req, name__startswith="refed_", state=Step.State.FAILED
        ).first()
        ctx["failed_error"] = identities.scrub(failed.error) if failed else ""
        ctx["cluster_url"] = refederation_url(req.cluster)
    _mail(template, ctx, to)


def _mail(template: str, ctx: dict, to: list[str]) -> None:
    subject = " ".join(render_to_string(f"emails/{template}_subject.txt", ctx).split())
    msg = EmailMultiAlternatives(subject, render_to_string(f"emails/{template}.txt", ctx), to=to)
    msg.attach_alternative(render_to_string(f"emails/{template}.html", ctx), "text/html")
    msg.send()  # smtplib's errors are OSErrors: they reach the job, which has RQ retry it


def refederation_url(cluster: Cluster) -> str:
    return settings.PORTAL_URL.rstrip("/") + reverse("cluster_refederation", args=[cluster.name])


def _send_about_cluster(kind: str, cluster_id: int, audience: str) -> None:
    """A cluster's notice (CLUSTER_NOTICES) to the admins or its DevOps members: read now, as every notice is."""
    from .refederation import affected, new_issuer  # the operation's module; nothing here is imported back

    cluster = Cluster.objects.get(pk=cluster_id)
    issuer = new_issuer(cluster)
    if not issuer:  # settled since reconcile found it (re-federated, or Azure reports the stored issuer again)
        log.info("%s of cluster %s: the issuer no longer differs; not mailed", kind, cluster.name)
        return
    if audience == ADMINS:
        people = graph.people(groups=settings.PORTAL_ADMIN_GROUPS, roles=settings.PORTAL_ADMIN_ROLES)
    else:
        people = graph.people(groups=[cluster.devops_group_id])
    to = list(dict.fromkeys(p.email for p in people if p.email))
    if not to:
        log.info("%s of cluster %s: no %s to mail", kind, cluster.name, audience)
        return
    ctx = {
        "cluster": cluster,
        "old_issuer": cluster.oidc_issuer_url,
        "new_issuer": issuer,
        "affected": len(affected(cluster)),
        "url": refederation_url(cluster),
        "reason": REASONS[audience].format(cluster=cluster),
        "facts": [("Cluster", str(cluster)), ("Stored issuer", cluster.oidc_issuer_url), ("Azure reports", issuer)],
    }
    _mail(kind, ctx, to)


def post_webhook(kind: str, request_id: uuid.UUID) -> None:
    """Post `kind` of the request to its cluster's chat webhook, if the cluster has one."""
    if kind not in WEBHOOK_EVENTS:
        raise ValueError(f"{kind} is not posted to chat")
    req = _load(request_id)
    cluster = req.cluster
    if not (cluster.notice_webhook_url and cluster.notice_webhook_kind):
        return
    webhooks.post(cluster.notice_webhook_kind, cluster.notice_webhook_url, chat_notice(kind, req))


def request_url(req: IdentityRequest) -> str:
    return settings.PORTAL_URL.rstrip("/") + reverse("request_detail", args=[req.pk])


def chat_notice(kind: str, req: IdentityRequest) -> webhooks.ChatNotice:
    what = f"{req.namespace}/{req.service_account} on {req.cluster}"
    title, text = {
        "request_submitted": (
            "New workload identity request",
            f"{req.requester} asks for an identity for {what}. It waits for an approver.",
        ),
        "request_ready": (
            "Workload identity ready",
            f"The identity for {what} is ready. The cluster's DevOps members can see its IDs and YAML in the portal.",
        ),
        "request_failed": (
            "Workload identity failed",
            f'Provisioning the identity for {what} failed at the step "{req.failed_step}". '
            "The requester or an admin can retry it from the portal.",
        ),
        # issue 11 changes
        "change_submitted": (
            "Change to a workload identity",
            f"{_asker(req)} asks to change what the identity for {what} may do. It waits for an approver.",
        ),
        # issue 11 loose ends
        "move_submitted": (
            "Move of a workload identity",
            f"{_mover(req)} asks to move the identity for {what} to another cluster. It waits for an approver.",
        ),
        # issue 11 lifecycle
        "identity_expiring": (
            "Workload identity expires soon",
            f"The identity for {what} expires on {_when(req.expires_at)} unless an owner re-confirms it.",
        ),
        "identity_suspended": (
            "Workload identity suspended",
            f"The identity for {what} was not re-confirmed: it is suspended (no new tokens). An owner can resume it.",
        ),
    }[kind]
    url = request_url(req) + ("#lifecycle" if kind in ("identity_expiring", "identity_suspended") else "")
    return webhooks.ChatNotice(title=title, text=text, facts=tuple(_facts(req)), url=url)


def _asker(req: IdentityRequest) -> str:
    change = _latest_change(req)
    return str(change.requester if change else req.requester)


def _mover(req: IdentityRequest) -> str:
    move = _latest_move(req)
    return str(move.requester if move else req.requester)


def _load(request_id: uuid.UUID) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "requester", "decided_by", "revoked_by").get(pk=request_id)


def _template(kind: str, audience: str, req: IdentityRequest) -> str:
    if kind == "request_decided":
        return "request_rejected" if req.status == Status.REJECTED else "request_approved"
    if kind in ONE_TEXT:  # issue 11: one text for everyone
        return kind
    return kind if audience in (REQUESTER, APPROVERS, ASKER, MOVER) else f"{kind}_{audience}"


def _facts(req: IdentityRequest) -> list[tuple[str, str]]:
    """What the request is, in labelled values (no Azure IDs: notices never carry them)."""
    return [
        ("Cluster", str(req.cluster)),
        ("Namespace", req.namespace),
        ("ServiceAccount", req.service_account),
        ("Requested by", str(req.requester)),
        *([("Expires", _when(req.expires_at))] if req.expires_at else []),  # issue 11 lifecycle
    ]


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "never"


def _addresses(audience: str, req: IdentityRequest, kind: str = "") -> list[str]:
    """The addresses of `audience`, read from Entra now; the requester has their own notice and is left out of
    every other audience (of a change waiting for approval: who asked for the change instead)."""
    if audience == REQUESTER:
        # issue 11 lifecycle: a requester Entra no longer knows (disabled, deleted) is mailed nothing.
        return [req.requester.email] if req.requester.email and not req.requester_left_at else []
    if audience == ASKER:
        change = _latest_change(req)
        asker = change.requester if change else None
        return [asker.email] if asker and asker.pk != req.requester_id and asker.email else []
    if audience == MOVER:  # issue 11 loose ends
        move = _latest_move(req)
        mover = move.requester if move else None
        return [mover.email] if mover and mover.pk != req.requester_id and mover.email else []
    if audience == APPROVERS:
        people = graph.people(groups=settings.PORTAL_APPROVER_GROUPS, roles=settings.PORTAL_APPROVER_ROLES)
    elif audience == ADMINS:
        people = graph.people(groups=settings.PORTAL_ADMIN_GROUPS, roles=settings.PORTAL_ADMIN_ROLES)
    elif audience == OWNERS:
        people = graph.people(groups=[req.owner_group_id])
    else:
        people = graph.people(groups=[req.cluster.devops_group_id])
    # Left out: the requester, who has their own notice; of a change waiting for approval, who asked for it
    # (nobody decides their own change, whoever asked for the identity: issue 11 changes).
    change = _latest_change(req) if kind == "change_submitted" else None
    change = _latest_move(req) if kind == "move_submitted" else change  # issue 11: nor their own move
    asking = change.requester if change else req.requester
    requester = {asking.object_id.lower(), asking.email.lower()} - {""}
    others = [p for p in people if p.object_id.lower() not in requester and p.email.lower() not in requester]
    unreachable = [p.name or p.object_id for p in others if not p.email]
    if unreachable:
        log.warning("no e-mail address in Entra for %s of the %s: not mailed", ", ".join(unreachable), audience)
    return list(dict.fromkeys(p.email for p in others if p.email))


def _latest_change(req: IdentityRequest) -> ChangeRequest | None:
    return ChangeRequest.objects.select_related("requester", "decided_by").filter(request=req).first()


def _latest_move(req: IdentityRequest) -> MoveRequest | None:
    return (
        MoveRequest.objects.select_related("requester", "decided_by", "from_cluster", "to_cluster")
        .filter(request=req)
        .first()
    )
