"""E-mail through Django's mail framework: approvers on a new request; the requester on each outcome.

Sent by a job (`jobs.send_mail`, queued on commit with the kind and a request id), never on the request path:
the message is rendered when the job runs, and an SMTP error raises so that RQ retries the job. Each message is
a template triplet under templates/emails/: `<name>_subject.txt`, `<name>.txt`, `<name>.html`. Client and
principal IDs never go into e-mail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from .models import IdentityRequest, Status, User


def _send(template: str, req: IdentityRequest, to: list[str]) -> None:
    to = [a for a in to if a]
    if not to:
        return
    ctx = {"req": req, "url": settings.PORTAL_URL.rstrip("/") + reverse("request_detail", args=[req.pk])}
    subject = " ".join(render_to_string(f"emails/{template}_subject.txt", ctx).split())
    msg = EmailMultiAlternatives(subject, render_to_string(f"emails/{template}.txt", ctx), to=to)
    msg.attach_alternative(render_to_string(f"emails/{template}.html", ctx), "text/html")
    msg.send()  # smtplib's errors are OSErrors: they reach RQ, which retries the job


def _load(request_id: uuid.UUID) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "requester", "decided_by").get(pk=request_id)


def request_submitted(request_id: uuid.UUID) -> None:
    req = _load(request_id)
    approvers = User.objects.filter(is_approver=True, is_active=True).exclude(pk=req.requester_id)
    _send("request_submitted", req, [u.email for u in approvers])


def request_decided(request_id: uuid.UUID) -> None:
    req = _load(request_id)
    template = "request_approved" if req.status != Status.REJECTED else "request_rejected"
    _send(template, req, [req.requester.email])


def request_ready(request_id: uuid.UUID) -> None:
    req = _load(request_id)
    _send("request_ready", req, [req.requester.email])


def request_failed(request_id: uuid.UUID) -> None:
    req = _load(request_id)
    _send("request_failed", req, [req.requester.email])


def request_revoked(request_id: uuid.UUID) -> None:
    req = _load(request_id)
    _send("request_revoked", req, [req.requester.email])


# The kinds of e-mail a job can send, by the name the workflow queues them under.
MAILS: dict[str, Callable[[uuid.UUID], None]] = {
    "request_submitted": request_submitted,
    "request_decided": request_decided,
    "request_ready": request_ready,
    "request_failed": request_failed,
    "request_revoked": request_revoked,
}


def send(kind: str, request_id: uuid.UUID) -> None:
    MAILS[kind](request_id)
