"""aad-pod-identity on the emulated clusters: its custom resources and the pods that use them.

aad-pod-identity (deprecated upstream) installs CRDs in the group `aadpodidentity.k8s.io`, version `v1`:
`AzureIdentity` (`azureidentities`: spec.type 0 = user-assigned MSI, spec.resourceID, spec.clientID) and
`AzureIdentityBinding` (`azureidentitybindings`: spec.azureIdentity, spec.selector), both namespaced. A pod
uses a binding by carrying the label `aadpodidbinding: <selector>`.

Served as the API server serves custom resources: list (`kind: AzureIdentityList`, apiVersion, items,
metadata.resourceVersion; label selectors), get, create (apiVersion and kind required, metadata validated,
generation 1) and delete (answered with a Status naming the group and the plural, not the object). The CRDs of
aad-pod-identity keep unknown fields, and its Go types decode field names case-insensitively, so manifests in
the wild spell them `resourceID`, `ResourceID` or `resourceid`: stored and served as written.

Lists of both answer `?watch=true` as every list of the API does (k8s_watch.py): seeds, creates and deletes are
its events, so `kubectl get pods -w` and `kubectl get azureidentities -w` follow them.

Pods: list (all namespaces, or one; label and field selectors) and get, `kind: PodList`. Pods are not created
through this API (the emulator runs no workloads): the control API seeds them (POST /_emulator/k8s/{cluster}/
objects), as it seeds custom resources too. Wire shapes: shared notes §6.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from aiohttp import web

from . import k8s, k8s_watch
from .k8s_validate import object_meta_errors

GROUP, VERSION = "aadpodidentity.k8s.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
BINDING_LABEL = "aadpodidbinding"
# plural -> kind
KINDS = {"azureidentities": "AzureIdentity", "azureidentitybindings": "AzureIdentityBinding"}
PLURALS = {kind: plural for plural, kind in KINDS.items()}
POD_STATUS = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}


def key(cluster: str, ns: str, name: str, plural: str = "pods") -> str:
    return f"{cluster}/{ns}/{plural}/{name}"


def _meta_for_new(emu: Any, meta: dict[str, Any], ns: str, generation: bool) -> dict[str, Any]:

    meta = {k: v for k, v in meta.items() if k not in ("selfLink", "managedFields", "deletionTimestamp")}
    meta |= {
        "namespace": ns,
        "uid": str(uuid.uuid4()),
        "resourceVersion": emu.store.next_resource_version(),
        "creationTimestamp": k8s.timestamp(emu.now()),
    }
    if generation:
        meta["generation"] = 1  # custom resources count spec changes from 1
    return k8s._ordered_meta(meta)


def validate_custom(body: Any, ns: str, plural: str) -> dict[str, Any]:
    """A custom resource body as the API server checks it before storing (raises k8s.Fail)."""

    kind = KINDS[plural]
    if not isinstance(body, dict):
        raise k8s.bad_request(f"the body of the request must be a {kind} object")
    if not body.get("kind"):
        raise k8s.bad_request("Object 'Kind' is missing in '" + str(body)[:200] + "'")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != kind:
        raise k8s.bad_request(
            f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version "
            f"({API_VERSION})"
            if body.get("apiVersion") != API_VERSION
            else f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})"
        )
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        raise k8s.bad_request("metadata must be an object")
    if meta.get("namespace") not in (None, "", ns):
        raise k8s.bad_request("the namespace of the provided object does not match the namespace sent on the request")
    errors = object_meta_errors(meta)
    if "spec" in body and not isinstance(body["spec"], dict):
        detail = f'spec in body must be of type object: "{type(body["spec"]).__name__}"'
        errors.append(("spec", body["spec"], detail, "FieldValueInvalid"))
    if errors:
        raise k8s.invalid(kind, meta.get("name") or "", errors, group=GROUP)
    return copy.deepcopy(body)


def validate_pod(body: Any) -> dict[str, Any]:
    """A pod to seed: metadata.name and at least one container; serviceAccountName defaults to `default`, as
    the ServiceAccount admission plugin sets it."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise ValueError("a Pod object with metadata")
    spec = body.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise ValueError("spec.containers: Required value")
    if object_meta_errors(body["metadata"]):
        raise ValueError("metadata.name: a lowercase RFC 1123 subdomain is required")
    pod = copy.deepcopy(body)
    pod["spec"].setdefault("serviceAccountName", "default")
    pod["spec"].setdefault("serviceAccount", pod["spec"]["serviceAccountName"])  # the deprecated alias
    pod.setdefault("status", copy.deepcopy(POD_STATUS))
    pod.pop("kind", None)
    pod.pop("apiVersion", None)
    return pod


def seed(emu: Any, cluster: str, body: Any) -> dict[str, Any]:
    """Put one Pod, AzureIdentity or AzureIdentityBinding on a cluster (the control API). Raises ValueError."""

    if not isinstance(body, dict):
        raise ValueError("expected an object")
    kind = body.get("kind")
    ns = ((body.get("metadata") or {}).get("namespace")) or "default"
    if f"{cluster}/{ns}" not in emu.store.namespaces:
        raise ValueError(f"no namespace {ns} on {cluster}")
    if kind == "Pod":
        pod = validate_pod(body)
        pod["metadata"] = _meta_for_new(emu, pod["metadata"], ns, generation=False)
        k = key(cluster, ns, pod["metadata"]["name"])
        event = "MODIFIED" if k in emu.store.pods else "ADDED"
        emu.store.pods[k] = pod
        k8s_watch.record(emu.store, cluster, "pods", ns, "Pod", event, pod)
        return {"kind": "Pod", "apiVersion": "v1", **pod}
    if kind not in PLURALS:
        raise ValueError("kind must be Pod, AzureIdentity or AzureIdentityBinding")
    plural = PLURALS[kind]
    try:
        obj = validate_custom(body, ns, plural)
    except k8s.Fail as e:
        raise ValueError(e.response.text) from None
    obj["metadata"] = _meta_for_new(emu, obj["metadata"], ns, generation=True)
    k = key(cluster, ns, obj["metadata"]["name"], plural)
    event = "MODIFIED" if k in emu.store.custom_objects else "ADDED"
    emu.store.custom_objects[k] = obj
    k8s_watch.record(emu.store, cluster, plural, ns, kind, event, obj)
    return obj


META_FIELDS = {
    "metadata.name": lambda o: o["metadata"]["name"],
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
}
POD_FIELDS = {
    **META_FIELDS,
    "spec.serviceAccountName": lambda o: o["spec"].get("serviceAccountName", ""),
    "spec.nodeName": lambda o: o["spec"].get("nodeName", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
}


class PodIdentity:
    """The custom resources' and the pods' part of a cluster's API; `k8s.Kubernetes` dispatches to it."""

    def __init__(self, api: Any):
        self.api = api  # the cluster API (k8s.Kubernetes): label and field selection
        self.emu = api.emu

    def routes(self) -> list[tuple[str, dict[str, Any]]]:
        base = f"/apis/{GROUP}/{VERSION}"
        return [
            (base, {"GET": self.group_resources}),
            (base + "/{plural}", {"GET": self.list_custom}),
            (base + "/namespaces/{ns}/{plural}", {"GET": self.list_custom, "POST": self.create_custom}),
            (base + "/namespaces/{ns}/{plural}/{name}", {"GET": self.get_custom, "DELETE": self.delete_custom}),
            ("/api/v1/pods", {"GET": self.list_pods}),
            ("/api/v1/namespaces/{ns}/pods", {"GET": self.list_pods}),
            ("/api/v1/namespaces/{ns}/pods/{name}", {"GET": self.get_pod}),
        ]

    def list_body(self, kind: str, api_version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "items": [copy.deepcopy(o) for o in items],
            "kind": kind,
            "metadata": {"resourceVersion": str(self.emu.store.resource_version)},
        }

    # -- pods (read-only) --

    async def list_pods(self, request: web.Request, cluster: Any) -> web.Response:
        ns = request.match_info.get("ns")
        prefix = f"{cluster.name}/{ns}/pods/" if ns else f"{cluster.name}/"
        objs = [o for k, o in sorted(self.emu.store.pods.items()) if k.startswith(prefix)]
        if k8s_watch.is_watch(request):
            return await self.watch(request, cluster, "pods", ns, objs, POD_FIELDS, "Pod", "v1")
        return web.json_response(self.list_body("PodList", "v1", self.api.select(request, objs, POD_FIELDS)))

    async def watch(
        self, request: web.Request, cluster: Any, resource: str, ns: str | None, objs: list[dict[str, Any]],
        fields: dict[str, Any], kind: str, api_version: str,
    ) -> web.StreamResponse:  # fmt: skip
        """A watch on a list path (k8s_watch.py); objects served as `get` serves them."""
        selected = self.api.select(request, objs, fields)  # a bad selector is refused before the stream starts

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            return {"kind": kind, "apiVersion": api_version, **copy.deepcopy(obj)}

        return await k8s_watch.stream(
            request,
            self.emu,
            cluster=cluster.name,
            resource=resource,
            ns=ns,
            current=selected,
            matches=lambda e: bool(self.api.select(request, [e["object"]], fields)),
            render=render,
            kind=kind,
            api_version=api_version,
        )

    async def get_pod(self, request: web.Request, cluster: Any) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self.emu.store.pods.get(key(cluster.name, ns, name))
        if obj is None:
            raise k8s.not_found("pods", name)
        return web.json_response({"kind": "Pod", "apiVersion": "v1", **copy.deepcopy(obj)})

    # -- the custom resources --

    def plural_of(self, request: web.Request) -> str:
        plural = request.match_info["plural"]
        if plural not in KINDS:
            raise k8s.path_not_found()
        return plural

    async def list_custom(self, request: web.Request, cluster: Any) -> web.Response:
        plural, ns = self.plural_of(request), request.match_info.get("ns")
        objs = [
            o
            for k, o in sorted(self.emu.store.custom_objects.items())
            if k.startswith(f"{cluster.name}/") and k.split("/")[2] == plural and (ns is None or k.split("/")[1] == ns)
        ]
        if k8s_watch.is_watch(request):
            return await self.watch(request, cluster, plural, ns, objs, META_FIELDS, KINDS[plural], API_VERSION)
        kind = KINDS[plural] + "List"
        return web.json_response(self.list_body(kind, API_VERSION, self.api.select(request, objs, META_FIELDS)))

    async def get_custom(self, request: web.Request, cluster: Any) -> web.Response:
        plural, ns, name = self.plural_of(request), request.match_info["ns"], request.match_info["name"]
        obj = self.emu.store.custom_objects.get(key(cluster.name, ns, name, plural))
        if obj is None:
            raise k8s.not_found(f"{plural}.{GROUP}", name)
        return web.json_response(copy.deepcopy(obj))

    async def create_custom(self, request: web.Request, cluster: Any) -> web.Response:
        plural, ns = self.plural_of(request), request.match_info["ns"]
        obj = validate_custom(await k8s.read_body(request), ns, plural)
        if f"{cluster.name}/{ns}" not in self.emu.store.namespaces:
            raise k8s.not_found("namespaces", ns)
        name = obj["metadata"]["name"]
        k = key(cluster.name, ns, name, plural)
        if k in self.emu.store.custom_objects:
            raise k8s.already_exists(f"{plural}.{GROUP}", name)
        obj["metadata"] = _meta_for_new(self.emu, obj["metadata"], ns, generation=True)
        if not k8s.is_dry_run(request):
            self.emu.store.custom_objects[k] = obj
            k8s_watch.record(self.emu.store, cluster.name, plural, ns, KINDS[plural], "ADDED", obj)
        return web.json_response(copy.deepcopy(obj), status=201)

    async def delete_custom(self, request: web.Request, cluster: Any) -> web.Response:
        plural, ns, name = self.plural_of(request), request.match_info["ns"], request.match_info["name"]
        k = key(cluster.name, ns, name, plural)
        obj = self.emu.store.custom_objects.get(k)
        if obj is None:
            raise k8s.not_found(f"{plural}.{GROUP}", name)
        if not k8s.is_dry_run(request):
            del self.emu.store.custom_objects[k]
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = self.emu.store.next_resource_version()  # a delete is a write
            k8s_watch.record(self.emu.store, cluster.name, plural, ns, KINDS[plural], "DELETED", gone)
        # Custom resources are not ReturnDeletedObject: the answer is a Status naming group and plural.
        details = {"name": name, "group": GROUP, "kind": plural, "uid": obj["metadata"]["uid"]}
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    async def group_resources(self, request: web.Request, cluster: Any) -> web.Response:
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": True,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "watch"],
            }
            for plural, kind in KINDS.items()
        ]
        return web.json_response(
            {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION, "resources": resources}
        )


def api_group() -> dict[str, Any]:
    """The group as /apis lists it."""
    gv = {"groupVersion": API_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [gv], "preferredVersion": gv}
