"""Describing a finding in one line for people, with the request's IDs masked unless they may see them."""

from __future__ import annotations

import re

from ..models import DriftFinding, IdentityRequest

Kind = DriftFinding.Kind


def describe(finding: DriftFinding, req: IdentityRequest, *, show_ids: bool = False) -> str:
    """One line for people about what differs. Without `show_ids`, the request's IDs are masked, just in case."""
    d = {k: v for k, v in finding.details.items() if isinstance(v, str)}
    kind = finding.kind
    if kind == Kind.FIC_CHANGED:
        parts = [
            f"{k} is {v.get('found')!r}, approved {v.get('expected')!r}"
            for k, v in finding.details.get("differs", {}).items()
        ]
        text = f"Credential {finding.key}: " + "; ".join(parts) + "."
    elif kind == Kind.SA_CHANGED:
        what = f"annotation {d['annotation']}" if "annotation" in d else f"label {d.get('label', finding.key)}"
        text = f"ServiceAccount {d.get('service_account', '')}: {what} is {d.get('found', 'changed')}."
    else:
        template = {
            Kind.IDENTITY_MISSING: "Managed identity {identity}: found {found}.",
            Kind.FIC_MISSING: "No federated credential for the approved issuer and subject.",
            Kind.FIC_UNEXPECTED: "Credential {credential} trusts issuer {issuer} for subject {subject}.",
            Kind.ROLE_MISSING: "{role} on {scope} is no longer assigned.",
            Kind.ROLE_UNEXPECTED: "{role} on {scope} was granted outside the portal.",
            Kind.SA_MISSING: "ServiceAccount {service_account} does not exist on cluster {cluster}.",
            Kind.DEVOPS_READER_MISSING: "The DevOps group {group} no longer has {role} on managed identity {identity}.",
        }.get(kind, "")
        try:
            text = template.format_map(d)
        except (KeyError, ValueError):
            text = finding.get_kind_display()
    return text if show_ids else _without_ids(text, req)


def _without_ids(text: str, req: IdentityRequest) -> str:
    for value, label in ((req.client_id, "client ID"), (req.principal_id, "principal ID")):
        if value:
            text = re.sub(re.escape(value), f"[{label}]", text, flags=re.IGNORECASE)
    return text
