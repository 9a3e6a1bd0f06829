"""Who the caller is and what they may do: `kubectl auth whoami` and `kubectl auth can-i`.

SelfSubjectReview (`POST /apis/authentication.k8s.io/v1/selfsubjectreviews`) answers with the user the API
server authenticated: a static token's user, or for an Entra token the name AKS gives it (UPN for people,
object ID for service principals) and the token's `groups` claim, plus `system:authenticated` as every
authenticated request carries. SelfSubjectAccessReview (`POST /apis/authorization.k8s.io/v1/
selfsubjectaccessreviews`) echoes the spec with `status.allowed`: RBAC inside the cluster is out of scope
(k8s.py), so every authenticated caller is allowed, and an unauthenticated one gets 401 before it asks.
Bodies are validated as the API server does (apiVersion and kind must match; a spec needs one attribute set).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from . import k8s

AUTHN, AUTHZ = "authentication.k8s.io", "authorization.k8s.io"
USER_INFO = web.RequestKey("k8s_user_info", dict)  # set by k8s.Kubernetes.authenticate


def api_groups() -> list[dict[str, Any]]:
    """The two groups as /apis lists them."""
    out = []
    for group in (AUTHN, AUTHZ):
        gv = {"groupVersion": f"{group}/v1", "version": "v1"}
        out.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return out


class Reviews:
    """The review kinds of a cluster's API; `k8s.Kubernetes` dispatches to it."""

    def routes(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (f"/apis/{AUTHN}/v1", {"GET": self.authentication_resources}),
            (f"/apis/{AUTHN}/v1/selfsubjectreviews", {"POST": self.self_subject_review}),
            (f"/apis/{AUTHZ}/v1", {"GET": self.authorization_resources}),
            (f"/apis/{AUTHZ}/v1/selfsubjectaccessreviews", {"POST": self.self_subject_access_review}),
        ]

    async def authentication_resources(self, request: web.Request, cluster: Any) -> web.Response:
        return web.json_response(_resources(AUTHN, [("selfsubjectreviews", "SelfSubjectReview")]))

    async def authorization_resources(self, request: web.Request, cluster: Any) -> web.Response:
        kinds = [("selfsubjectaccessreviews", "SelfSubjectAccessReview")]
        return web.json_response(_resources(AUTHZ, kinds))

    async def self_subject_review(self, request: web.Request, cluster: Any) -> web.Response:
        body = await _review_body(request, AUTHN, "SelfSubjectReview")
        out = {
            "kind": "SelfSubjectReview",
            "apiVersion": f"{AUTHN}/v1",
            "metadata": {"creationTimestamp": None} | (body.get("metadata") or {}),
            "status": {"userInfo": copy.deepcopy(request[USER_INFO])},
        }
        return web.json_response(out, status=201)

    async def self_subject_access_review(self, request: web.Request, cluster: Any) -> web.Response:
        body = await _review_body(request, AUTHZ, "SelfSubjectAccessReview")
        spec = body.get("spec")
        if not isinstance(spec, dict) or bool(spec.get("resourceAttributes")) == bool(
            spec.get("nonResourceAttributes")
        ):
            detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
            raise k8s.invalid(
                "SelfSubjectAccessReview",
                "",
                [("spec.resourceAttributes", spec, detail, "FieldValueInvalid")],
                group=AUTHZ,
            )
        out = {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": f"{AUTHZ}/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": {"allowed": True},
        }
        return web.json_response(out, status=201)


def _resources(group: str, kinds: list[tuple[str, str]]) -> dict[str, Any]:
    resources = [
        {"name": plural, "singularName": kind.lower(), "namespaced": False, "kind": kind, "verbs": ["create"]}
        for plural, kind in kinds
    ]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1", "resources": resources}


async def _review_body(request: web.Request, group: str, kind: str) -> dict[str, Any]:
    body = await k8s.read_body(request)
    if not isinstance(body, dict):
        raise k8s.bad_request(f"the body of the request must be a {kind} object")
    k8s.check_type(body, kind, f"{group}/v1")
    return body
