"""The OpenAPI documents of a cluster's API (`/openapi/v3`, `/openapi/v3/{group-version}`, `/openapi/v2`).

kubectl reads them to validate manifests on the client (`kubectl apply`, `create -f`) and to compute strategic
merge patches (patch strategy and merge keys per field). Shaped as kubernetes/kubernetes
api/openapi-spec/v3/api__v1_openapi.json and the v2 swagger.json: schemas named by Go package and type,
`allOf`-wrapped references, `x-kubernetes-group-version-kind` on each kind, `x-kubernetes-patch-strategy` and
`-merge-key` on merged lists. Trimmed to the kinds this emulator serves (ServiceAccount, Namespace, Pod,
TokenRequest, the two review kinds, aad-pod-identity's custom resources) and their fields, descriptions
shortened. Each write operation in `paths` takes `fieldValidation`: kubectl 1.32 finds it there and has the
server validate fields (`fieldValidation=Strict`), as against a real API server; it would otherwise validate on
the client with the protobuf `/openapi/v2`, which this emulator serves as JSON only (for `get --raw`).

The discovery document (`/openapi/v3`) points at each group-version's document with `?hash=` (the upper-case
SHA-512 of its bytes), which kubectl caches by; asked without a hash, the documents are not cacheable.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from . import k8s_podid

INFO_VERSION = "v1.30.4"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
CORE = "io.k8s.api.core.v1."
APIVERSION = {
    "description": "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    "type": "string",
}
KIND = {
    "description": "Kind is a string value representing the REST resource this object represents. Servers may infer "
    "this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
    "type": "string",
}
STRING = {"type": "string"}
STRING_MAP = {"additionalProperties": {"default": "", "type": "string"}, "type": "object"}


def ref(name: str, description: str = "", default: Any = None) -> dict[str, Any]:
    """A property that is another schema, as the v3 documents write it: allOf-wrapped, with a default."""
    out: dict[str, Any] = {"allOf": [{"$ref": f"#/components/schemas/{name}"}]}
    if default is not None:
        out["default"] = default
    if description:
        out["description"] = description
    return out


def array_of(name: str, **extensions: Any) -> dict[str, Any]:
    return {"items": {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": {}}, "type": "array"} | extensions


def gvk(group: str, version: str, kind: str) -> list[dict[str, str]]:
    return [{"group": group, "kind": kind, "version": version}]


def kind_schema(
    description: str, group: str, version: str, kind: str, properties: dict[str, Any], required: list[str] = ()
) -> dict[str, Any]:
    props = {
        "apiVersion": APIVERSION,
        "kind": KIND,
        "metadata": ref(META + "ObjectMeta", "Standard object's metadata.", {}),
    }
    out: dict[str, Any] = {"description": description, "properties": dict(sorted((props | properties).items()))}
    if required:
        out["required"] = list(required)
    out |= {"type": "object", "x-kubernetes-group-version-kind": gvk(group, version, kind)}
    return out


def list_schema(item: str, group: str, version: str, kind: str) -> dict[str, Any]:
    return {
        "description": f"{kind} is a list of {item.rsplit('.', 1)[1]} objects.",
        "properties": {
            "apiVersion": APIVERSION,
            "items": array_of(item),
            "kind": KIND,
            "metadata": ref(META + "ListMeta", "Standard list metadata.", {}),
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": gvk(group, version, kind),
    }


# ----- apimachinery: what every kind refers to --------------------------------------------------------------

META_SCHEMAS: dict[str, Any] = {
    META + "FieldsV1": {
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.",
        "type": "object",
    },
    META + "ListMeta": {
        "description": "ListMeta describes metadata that synthetic resources must have, including lists.",
        "properties": {
            "continue": STRING,
            "remainingItemCount": {"format": "int64", "type": "integer"},
            "resourceVersion": STRING,
            "selfLink": STRING,
        },
        "type": "object",
    },
    META + "ManagedFieldsEntry": {
        "description": "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the resource that "
        "the fieldset applies to.",
        "properties": {
            "apiVersion": STRING,
            "fieldsType": STRING,
            "fieldsV1": ref(META + "FieldsV1", "FieldsV1 holds the first JSON version format."),
            "manager": STRING,
            "operation": STRING,
            "subresource": STRING,
            "time": ref(META + "Time", "Time is the timestamp of when the ManagedFields entry was added."),
        },
        "type": "object",
    },
    META + "ObjectMeta": {
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects "
        "users must create.",
        "properties": {
            "annotations": STRING_MAP,
            "creationTimestamp": ref(META + "Time"),
            "deletionGracePeriodSeconds": {"format": "int64", "type": "integer"},
            "deletionTimestamp": ref(META + "Time"),
            "finalizers": {
                "items": {"default": "", "type": "string"},
                "type": "array",
                "x-kubernetes-list-type": "set",
                "x-kubernetes-patch-strategy": "merge",
            },
            "generateName": STRING,
            "generation": {"format": "int64", "type": "integer"},
            "labels": STRING_MAP,
            "managedFields": array_of(META + "ManagedFieldsEntry", **{"x-kubernetes-list-type": "atomic"}),
            "name": STRING,
            "namespace": STRING,
            "ownerReferences": array_of(
                META + "OwnerReference",
                **{
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
            ),
            "resourceVersion": STRING,
            "selfLink": STRING,
            "uid": STRING,
        },
        "type": "object",
    },
    META + "OwnerReference": {
        "description": "OwnerReference contains enough information to let you identify an owning object.",
        "properties": {
            "apiVersion": {"default": "", "type": "string"},
            "blockOwnerDeletion": {"type": "boolean"},
            "controller": {"type": "boolean"},
            "kind": {"default": "", "type": "string"},
            "name": {"default": "", "type": "string"},
            "uid": {"default": "", "type": "string"},
        },
        "required": ["apiVersion", "kind", "name", "uid"],
        "type": "object",
        "x-kubernetes-map-type": "atomic",
    },
    META + "Time": {
        "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.",
        "format": "date-time",
        "type": "string",
    },
}

# ----- core/v1 ---------------------------------------------------------------------------------------------

NAMED_LIST = {"x-kubernetes-list-map-keys": ["name"], "x-kubernetes-list-type": "map"}
MERGE_BY_NAME = {"x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"}

CORE_SCHEMAS: dict[str, Any] = {
    CORE + "Container": {
        "description": "A single application container that you want to run within a pod.",
        "properties": {
            "args": {"items": {"default": "", "type": "string"}, "type": "array", "x-kubernetes-list-type": "atomic"},
            "command": {
                "items": {"default": "", "type": "string"},
                "type": "array",
                "x-kubernetes-list-type": "atomic",
            },
            "env": array_of(CORE + "EnvVar", **NAMED_LIST, **MERGE_BY_NAME),
            "image": STRING,
            "imagePullPolicy": STRING,
            "name": {"default": "", "type": "string"},
        },
        "required": ["name"],
        "type": "object",
    },
    CORE + "EnvVar": {
        "description": "EnvVar represents an environment variable present in a Container.",
        "properties": {"name": {"default": "", "type": "string"}, "value": STRING},
        "required": ["name"],
        "type": "object",
    },
    CORE + "LocalObjectReference": {
        "description": "LocalObjectReference contains enough information to let you locate the referenced object "
        "inside the same namespace.",
        "properties": {"name": {"default": "", "type": "string"}},
        "type": "object",
        "x-kubernetes-map-type": "atomic",
    },
    CORE + "Namespace": kind_schema(
        "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
        "",
        "v1",
        "Namespace",
        {
            "spec": ref(CORE + "NamespaceSpec", "Spec defines the behavior of the Namespace.", {}),
            "status": ref(CORE + "NamespaceStatus", "Status describes the current status of a Namespace.", {}),
        },
    ),
    CORE + "NamespaceList": list_schema(CORE + "Namespace", "", "v1", "NamespaceList"),
    CORE + "NamespaceSpec": {
        "description": "NamespaceSpec describes the attributes on a Namespace.",
        "properties": {
            "finalizers": {
                "items": {"default": "", "type": "string"},
                "type": "array",
                "x-kubernetes-list-type": "atomic",
            }
        },
        "type": "object",
    },
    CORE + "NamespaceStatus": {
        "description": "NamespaceStatus is information about the current status of a Namespace.",
        "properties": {
            "phase": {
                "description": 'Possible enum values:\n - `"Active"`\n - `"Terminating"`',
                "enum": ["Active", "Terminating"],
                "type": "string",
            }
        },
        "type": "object",
    },
    CORE + "ObjectReference": {
        "description": "ObjectReference contains enough information to let you inspect or modify the referred object.",
        "properties": {
            "apiVersion": STRING,
            "fieldPath": STRING,
            "kind": STRING,
            "name": STRING,
            "namespace": STRING,
            "resourceVersion": STRING,
            "uid": STRING,
        },
        "type": "object",
        "x-kubernetes-map-type": "atomic",
    },
    CORE + "Pod": kind_schema(
        "Pod is a collection of containers that can run on a host.",
        "",
        "v1",
        "Pod",
        {
            "spec": ref(CORE + "PodSpec", "Specification of the desired behavior of the pod.", {}),
            "status": ref(CORE + "PodStatus", "Most recently observed status of the pod.", {}),
        },
    ),
    CORE + "PodCondition": {
        "description": "PodCondition contains details for the current condition of this pod.",
        "properties": {"status": {"default": "", "type": "string"}, "type": {"default": "", "type": "string"}},
        "required": ["type", "status"],
        "type": "object",
    },
    CORE + "PodList": list_schema(CORE + "Pod", "", "v1", "PodList"),
    CORE + "PodSpec": {
        "description": "PodSpec is a description of a pod.",
        "properties": {
            "containers": array_of(CORE + "Container", **NAMED_LIST, **MERGE_BY_NAME),
            "nodeName": STRING,
            "serviceAccount": STRING,
            "serviceAccountName": STRING,
        },
        "required": ["containers"],
        "type": "object",
    },
    CORE + "PodStatus": {
        "description": "PodStatus represents information about the status of a pod.",
        "properties": {
            "conditions": array_of(
                CORE + "PodCondition",
                **{"x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map"},
                **{"x-kubernetes-patch-merge-key": "type", "x-kubernetes-patch-strategy": "merge"},
            ),
            "phase": {"enum": ["Failed", "Pending", "Running", "Succeeded", "Unknown"], "type": "string"},
        },
        "type": "object",
    },
    CORE + "ServiceAccount": kind_schema(
        "ServiceAccount binds together: * a name, understood by users, and perhaps by peripheral systems, for an "
        "identity * a principal that can be authenticated and authorized * a set of secrets",
        "",
        "v1",
        "ServiceAccount",
        {
            "automountServiceAccountToken": {"type": "boolean"},
            "imagePullSecrets": array_of(CORE + "LocalObjectReference", **{"x-kubernetes-list-type": "atomic"}),
            "secrets": array_of(CORE + "ObjectReference", **{"x-kubernetes-list-type": "atomic"}, **MERGE_BY_NAME),
        },
    ),
    CORE + "ServiceAccountList": list_schema(CORE + "ServiceAccount", "", "v1", "ServiceAccountList"),
}

AUTHN = "io.k8s.api.authentication.v1."
AUTHN_SCHEMAS: dict[str, Any] = {
    AUTHN + "BoundObjectReference": {
        "description": "BoundObjectReference is a reference to an object that a token is bound to.",
        "properties": {"apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING},
        "type": "object",
    },
    AUTHN + "SelfSubjectReview": kind_schema(
        "SelfSubjectReview contains the user information that the kube-apiserver has about the user making this "
        "request.",
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        {"status": ref(AUTHN + "SelfSubjectReviewStatus", "Status is filled in by the server.", {})},
    ),
    AUTHN + "SelfSubjectReviewStatus": {
        "description": "SelfSubjectReviewStatus is filled by the kube-apiserver and sent back to a user.",
        "properties": {"userInfo": ref(AUTHN + "UserInfo", "User attributes of the user making this request.", {})},
        "type": "object",
    },
    AUTHN + "TokenRequest": kind_schema(
        "TokenRequest requests a token for a given service account.",
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        {
            "spec": ref(AUTHN + "TokenRequestSpec", "Spec holds information about the request being evaluated", {}),
            "status": ref(AUTHN + "TokenRequestStatus", "Status is filled in by the server.", {}),
        },
        ["spec"],
    ),
    AUTHN + "TokenRequestSpec": {
        "description": "TokenRequestSpec contains client provided parameters of a token request.",
        "properties": {
            "audiences": {
                "items": {"default": "", "type": "string"},
                "type": "array",
                "x-kubernetes-list-type": "atomic",
            },
            "boundObjectRef": ref(AUTHN + "BoundObjectReference"),
            "expirationSeconds": {"format": "int64", "type": "integer"},
        },
        "required": ["audiences"],
        "type": "object",
    },
    AUTHN + "TokenRequestStatus": {
        "description": "TokenRequestStatus is the result of a token request.",
        "properties": {"expirationTimestamp": ref(META + "Time"), "token": {"default": "", "type": "string"}},
        "required": ["token", "expirationTimestamp"],
        "type": "object",
    },
    AUTHN + "UserInfo": {
        "description": "UserInfo holds the information about the user needed to implement the user.Info interface.",
        "properties": {
            "extra": {
                "additionalProperties": {"items": {"default": "", "type": "string"}, "type": "array"},
                "type": "object",
            },
            "groups": {"items": {"default": "", "type": "string"}, "type": "array", "x-kubernetes-list-type": "atomic"},
            "uid": STRING,
            "username": STRING,
        },
        "type": "object",
    },
}

AUTHZ = "io.k8s.api.authorization.v1."
AUTHZ_SCHEMAS: dict[str, Any] = {
    AUTHZ + "ResourceAttributes": {
        "description": "ResourceAttributes includes the authorization attributes available for resource requests.",
        "properties": {k: STRING for k in ("group", "name", "namespace", "resource", "subresource", "verb", "version")},
        "type": "object",
    },
    AUTHZ + "NonResourceAttributes": {
        "description": "NonResourceAttributes includes the authorization attributes available for non-resource "
        "requests.",
        "properties": {"path": STRING, "verb": STRING},
        "type": "object",
    },
    AUTHZ + "SelfSubjectAccessReview": kind_schema(
        "SelfSubjectAccessReview checks whether or the current user can perform an action.",
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        {
            "spec": ref(AUTHZ + "SelfSubjectAccessReviewSpec", "Spec holds information about the request.", {}),
            "status": ref(AUTHZ + "SubjectAccessReviewStatus", "Status is filled in by the server.", {}),
        },
        ["spec"],
    ),
    AUTHZ + "SelfSubjectAccessReviewSpec": {
        "description": "SelfSubjectAccessReviewSpec is a description of the access request.",
        "properties": {
            "nonResourceAttributes": ref(AUTHZ + "NonResourceAttributes"),
            "resourceAttributes": ref(AUTHZ + "ResourceAttributes"),
        },
        "type": "object",
    },
    AUTHZ + "SubjectAccessReviewStatus": {
        "description": "SubjectAccessReviewStatus",
        "properties": {
            "allowed": {"default": False, "type": "boolean"},
            "denied": {"type": "boolean"},
            "evaluationError": STRING,
            "reason": STRING,
        },
        "required": ["allowed"],
        "type": "object",
    },
}


def _custom_schema(kind: str) -> dict[str, Any]:
    """A custom resource as the API server publishes a CRD's structural schema: its group reversed, spec and
    status kept as written (aad-pod-identity's CRDs preserve unknown fields)."""
    free = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "properties": {
            "apiVersion": APIVERSION,
            "kind": KIND,
            "metadata": ref(META + "ObjectMeta", "Standard object's metadata.", {}),
            "spec": free,
            "status": free,
        },
        "type": "object",
        "x-kubernetes-group-version-kind": gvk(k8s_podid.GROUP, k8s_podid.VERSION, kind),
    }


def _reversed_group(group: str) -> str:
    return ".".join(reversed(group.split(".")))


FIELD_VALIDATION = {
    "description": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) "
    "containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that "
    "are silently dropped from the object, and will ignore all but the last duplicate field that the decoder "
    "encounters. - Warn: This will send a warning via the standard warning response header for each unknown field "
    "that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail "
    "the request with a BadRequest error if any unknown fields would be dropped from the object, or if any "
    "duplicate fields are present. The error returned from the server will contain all unknown and duplicate "
    "fields encountered.",
    "in": "query",
    "name": "fieldValidation",
    "schema": {"type": "string", "uniqueItems": True},
}


def _operation(op_id: str, kind: str, group: str, version: str, action: str) -> dict[str, Any]:
    params = [{"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    params += [{"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
    if action in ("post", "put", "patch"):
        params.append(FIELD_VALIDATION)
    return {
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "tags": [f"core_{version}" if not group else f"{group.split('.')[0]}_{version}"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
    }


def _document(schemas: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }


def _core_paths() -> dict[str, Any]:
    sa = "/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
    return {
        "/api/v1/namespaces/{namespace}/serviceaccounts": {
            "post": _operation("createCoreV1NamespacedServiceAccount", "ServiceAccount", "", "v1", "post"),
        },
        sa: {
            "get": _operation("readCoreV1NamespacedServiceAccount", "ServiceAccount", "", "v1", "get"),
            "patch": _operation("patchCoreV1NamespacedServiceAccount", "ServiceAccount", "", "v1", "patch"),
            "put": _operation("replaceCoreV1NamespacedServiceAccount", "ServiceAccount", "", "v1", "put"),
        },
        sa + "/token": {
            "post": _operation(
                "createCoreV1NamespacedServiceAccountToken", "TokenRequest", "authentication.k8s.io", "v1", "post"
            ),
        },
    }


def _custom_paths() -> dict[str, Any]:
    base = f"/apis/{k8s_podid.GROUP}/{k8s_podid.VERSION}/namespaces/{{namespace}}"
    g, v = k8s_podid.GROUP, k8s_podid.VERSION
    out: dict[str, Any] = {}
    for plural, kind in k8s_podid.KINDS.items():
        out[f"{base}/{plural}"] = {"post": _operation(f"create{kind}", kind, g, v, "post")}
        out[f"{base}/{plural}/{{name}}"] = {
            "get": _operation(f"read{kind}", kind, g, v, "get"),
            "patch": _operation(f"patch{kind}", kind, g, v, "patch"),
        }
    return out


def documents() -> dict[str, dict[str, Any]]:
    """Each group-version's document, by its path under /openapi/v3."""
    meta = copy.deepcopy(META_SCHEMAS)
    podid = {
        f"{_reversed_group(k8s_podid.GROUP)}.{k8s_podid.VERSION}.{k}": _custom_schema(k) for k in k8s_podid.PLURALS
    }
    return {
        "api/v1": _document(
            meta
            | CORE_SCHEMAS
            | {k: v for k, v in AUTHN_SCHEMAS.items() if "SelfSubject" not in k and "UserInfo" not in k},
            _core_paths(),
        ),
        "apis/authentication.k8s.io/v1": _document(meta | AUTHN_SCHEMAS, {}),
        "apis/authorization.k8s.io/v1": _document(meta | AUTHZ_SCHEMAS, {}),
        f"apis/{k8s_podid.GROUP}/{k8s_podid.VERSION}": _document(meta | podid, _custom_paths()),
    }


def encoded() -> dict[str, tuple[bytes, str]]:
    """Each document's bytes and the hash its discovery entry names."""
    out = {}
    for path, doc in documents().items():
        raw = json.dumps(doc, separators=(",", ":")).encode()
        out[path] = (raw, hashlib.sha512(raw).hexdigest().upper())
    return out


def discovery(encoded_docs: dict[str, tuple[bytes, str]]) -> dict[str, Any]:
    return {"paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"} for p, (_, h) in encoded_docs.items()}}


def swagger_v2() -> dict[str, Any]:
    """The same schemas as one Swagger 2.0 document (`/openapi/v2`): references to #/definitions, unwrapped."""
    schemas: dict[str, Any] = {}
    for doc in documents().values():
        schemas |= doc["components"]["schemas"]
    text = json.dumps(schemas).replace("#/components/schemas/", "#/definitions/")
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": {},
        "definitions": dict(sorted(_unwrap(json.loads(text)).items())),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            }
        },
        "security": [{"BearerToken": []}],
    }


def _unwrap(node: Any) -> Any:
    """v2 writes a reference bare ({"$ref": …, "description": …}) where v3 wraps it in allOf with a default."""
    if isinstance(node, list):
        return [_unwrap(n) for n in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k not in ("allOf", "default")}}
    return {k: _unwrap(v) for k, v in node.items()}
