"""The emulated Kubernetes API, driven through the real kubernetes Python client (wire notes §6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.identity import ClientSecretCredential
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from emulator import Emulator, EmulatorClient
from emulator.config import AKS_SERVER_APP_ID, Cluster

AKS_SCOPE = f"{AKS_SERVER_APP_ID}/.default"
NS = "team-payments"
WI_ANNOTATION = "azure.workload.identity/client-id"
MANAGED_BY = "app.kubernetes.io/managed-by"


def core_api(emu: Emulator, cluster: Cluster, token: str) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(emu, cluster, token))


def api_client(emu: Emulator, cluster: Cluster, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = emu.cluster_api(cluster)
    cfg.ssl_ca_cert = str(emu.tls.ca_cert)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    cfg.retries = False
    return client.ApiClient(cfg)


@pytest.fixture
def static_token(cluster: Cluster) -> str:
    return cluster.static_tokens[0].token


@pytest.fixture
def core(emu: Emulator, cluster: Cluster, static_token: str) -> client.CoreV1Api:
    return core_api(emu, cluster, static_token)


@pytest.fixture
def entra_core(emu: Emulator, cluster: Cluster, credential: ClientSecretCredential) -> client.CoreV1Api:
    return core_api(emu, cluster, credential.get_token(AKS_SCOPE).token)


def new_sa(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Any:
    return client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations))


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def fails(fn: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    return info.value


# ----- discovery ------------------------------------------------------------------------------------------


def test_version_and_discovery_answer_like_an_api_server(emu: Emulator, cluster: Cluster, static_token: str) -> None:
    api = api_client(emu, cluster, static_token)
    version = client.VersionApi(api).get_code()
    assert (version.git_version, version.major, version.minor, version.platform) == (
        "v1.30.4",
        "1",
        "30",
        "linux/amd64",
    )
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    assert [g.name for g in client.ApisApi(api).get_api_versions().groups] == [
        "authentication.k8s.io",
        "authorization.k8s.io",
        "aadpodidentity.k8s.io",  # custom resources after the built-in groups, as the API server lists them
    ]
    resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert resources["serviceaccounts"].kind == "ServiceAccount"
    assert resources["serviceaccounts"].namespaced is True
    assert "patch" in resources["serviceaccounts"].verbs
    assert resources["serviceaccounts/token"].kind == "TokenRequest"
    assert resources["namespaces"].namespaced is False


def test_an_unknown_cluster_or_path_is_a_404_status(emu: Emulator, http: requests.Session, static_token: str) -> None:
    auth = {"Authorization": f"Bearer {static_token}"}
    r = http.get(f"{emu.url}/k8s/no-such-cluster/api/v1/namespaces", headers=auth, timeout=5)
    assert (r.status_code, r.json()["kind"]) == (404, "Status")
    r = http.get(f"{emu.url}/k8s/aks-demo/api/v1/configmaps", headers=auth, timeout=5)
    assert (r.status_code, r.json()["reason"]) == (404, "NotFound")
    r = http.post(f"{emu.url}/k8s/aks-demo/api/v1/namespaces/{NS}", headers=auth, timeout=5)
    assert (r.status_code, r.json()["reason"]) == (405, "MethodNotAllowed")


# ----- authentication ---------------------------------------------------------------------------------------


def test_it_answers_401_without_a_token(emu: Emulator, cluster: Cluster, http: requests.Session) -> None:
    r = http.get(emu.cluster_api(cluster) + "/api/v1/namespaces", timeout=5)
    assert r.status_code == 401
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_it_answers_401_to_a_bad_token(emu: Emulator, cluster: Cluster) -> None:
    e = fails(core_api(emu, cluster, "not-a-token").list_namespace)
    assert (e.status, e.reason, status_of(e)["reason"]) == (401, "Unauthorized", "Unauthorized")


def test_it_answers_401_to_an_entra_token_for_another_audience(
    emu: Emulator, cluster: Cluster, credential: ClientSecretCredential
) -> None:
    arm_token = credential.get_token("https://management.azure.com/.default").token
    assert fails(core_api(emu, cluster, arm_token).list_namespace).status == 401


def test_it_answers_401_to_an_entra_token_from_another_tenant(emu: Emulator, cluster: Cluster) -> None:
    other = emu.config.tenants[1]
    token, _ = emu.issue_access_token(other.id, audience=AKS_SERVER_APP_ID, claims={"oid": other.users[0].oid})
    assert fails(core_api(emu, cluster, token).list_namespace).status == 401


def test_it_answers_401_to_an_expired_entra_token(
    emu: Emulator, cluster: Cluster, control: EmulatorClient, credential: ClientSecretCredential
) -> None:
    api = core_api(emu, cluster, credential.get_token(AKS_SCOPE).token)
    control.advance_clock(emu.settings.access_token_lifetime_seconds + 60)
    assert fails(api.list_namespace).status == 401


def test_an_entra_token_for_the_aks_server_app_is_accepted_and_logged_as_its_caller(
    entra_core: client.CoreV1Api, control: EmulatorClient, portal_app: Any
) -> None:
    entra_core.create_namespaced_service_account(NS, new_sa("via-entra"))
    [call] = [c for c in control.calls(path="/serviceaccounts") if c["method"] == "POST"]
    assert (call["status"], call["caller"]) == (201, portal_app.object_id)


def test_a_static_token_is_logged_as_its_user(core: client.CoreV1Api, control: EmulatorClient) -> None:
    core.list_namespace()
    [call] = control.calls(path="/api/v1/namespaces")
    assert call["caller"] == "clusterAdmin"


# ----- namespaces -------------------------------------------------------------------------------------------


def test_namespaces_can_be_read_and_listed(core: client.CoreV1Api, cluster: Cluster) -> None:
    names = [n.metadata.name for n in core.list_namespace().items]
    assert sorted(names) == sorted(cluster.namespaces)
    ns = core.read_namespace(NS)
    assert (ns.metadata.name, ns.status.phase, ns.metadata.labels) == (
        NS,
        "Active",
        {"kubernetes.io/metadata.name": NS},
    )


def test_a_missing_namespace_is_a_404_status(core: client.CoreV1Api) -> None:
    e = fails(core.read_namespace, "team-x")
    assert (e.status, e.reason) == (404, "Not Found")
    assert status_of(e) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'namespaces "team-x" not found',
        "reason": "NotFound",
        "details": {"name": "team-x", "kind": "namespaces"},
        "code": 404,
    }


# ----- service accounts: create, read, list -----------------------------------------------------------------


def test_it_creates_a_service_account_with_201_and_server_fields(core: client.CoreV1Api) -> None:
    # The kubernetes client sends POST without a Content-Type header; the emulator must take it as JSON.
    sa, status, _ = core.create_namespaced_service_account_with_http_info(
        NS, new_sa("sa1", {"azure.workload.identity/use": "true"}, {WI_ANNOTATION: "cid"})
    )
    assert status == 201
    assert (sa.kind, sa.api_version, sa.metadata.namespace) == ("ServiceAccount", "v1", NS)
    assert sa.metadata.uid and sa.metadata.resource_version and sa.metadata.creation_timestamp
    got = core.read_namespaced_service_account("sa1", NS)
    assert got.metadata.annotations == {WI_ANNOTATION: "cid"}
    assert got.metadata.resource_version == sa.metadata.resource_version


def test_a_raw_post_without_content_type_is_accepted(
    emu: Emulator, cluster: Cluster, http: requests.Session, static_token: str
) -> None:
    r = http.post(
        f"{emu.cluster_api(cluster)}/api/v1/namespaces/{NS}/serviceaccounts",
        data=json.dumps({"metadata": {"name": "raw"}}).encode(),
        headers={"Authorization": f"Bearer {static_token}"},
        timeout=5,
    )
    assert "Content-Type" not in r.request.headers
    assert (r.status_code, r.json()["metadata"]["name"]) == (201, "raw")


def test_generate_name_makes_a_unique_name(core: client.CoreV1Api) -> None:
    sa = core.create_namespaced_service_account(NS, {"metadata": {"generateName": "wi-"}})
    assert sa.metadata.name.startswith("wi-") and len(sa.metadata.name) == 8


def test_it_answers_409_already_exists_for_a_taken_name(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    e = fails(core.create_namespaced_service_account, NS, new_sa("sa1"))
    assert (e.status, e.reason) == (409, "Conflict")
    assert status_of(e)["reason"] == "AlreadyExists"
    assert status_of(e)["message"] == 'serviceaccounts "sa1" already exists'
    assert status_of(e)["details"] == {"name": "sa1", "kind": "serviceaccounts"}


def test_it_answers_422_with_causes_for_an_invalid_name(core: client.CoreV1Api) -> None:
    e = fails(core.create_namespaced_service_account, NS, new_sa("Bad_Name"))
    assert (e.status, e.reason) == (422, "Unprocessable Entity")
    rule = (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
        "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
    assert status_of(e) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'ServiceAccount "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": {rule}',
        "reason": "Invalid",
        "details": {
            "name": "Bad_Name",
            "kind": "ServiceAccount",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": f'Invalid value: "Bad_Name": {rule}',
                    "field": "metadata.name",
                }
            ],
        },
        "code": 422,
    }


def test_a_name_over_253_characters_is_invalid(core: client.CoreV1Api) -> None:
    e = fails(core.create_namespaced_service_account, NS, new_sa("a" * 254))
    [cause] = status_of(e)["details"]["causes"]
    assert (e.status, cause["message"]) == (422, f'Invalid value: "{"a" * 254}": must be no more than 253 characters')


def test_a_bad_label_value_is_invalid(core: client.CoreV1Api) -> None:
    e = fails(core.create_namespaced_service_account, NS, new_sa("sa1", {"team": "not valid!"}))
    assert (e.status, status_of(e)["details"]["causes"][0]["field"]) == (422, "metadata.labels")


def test_creating_in_a_missing_namespace_is_404_namespaces_not_found(core: client.CoreV1Api) -> None:
    e = fails(core.create_namespaced_service_account, "team-x", new_sa("sa1"))
    assert (e.status, status_of(e)["message"], status_of(e)["details"]["kind"]) == (
        404,
        'namespaces "team-x" not found',
        "namespaces",
    )


def test_a_missing_service_account_is_a_404_status(core: client.CoreV1Api) -> None:
    e = fails(core.read_namespaced_service_account, "nope", NS)
    assert (e.status, status_of(e)["message"], status_of(e)["details"]) == (
        404,
        'serviceaccounts "nope" not found',
        {"name": "nope", "kind": "serviceaccounts"},
    )


def test_lists_filter_by_label_selector_in_one_or_all_namespaces(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("mine", {MANAGED_BY: "workload-identity-portal"}))
    core.create_namespaced_service_account("team-search", new_sa("also-mine", {MANAGED_BY: "workload-identity-portal"}))
    core.create_namespaced_service_account(NS, new_sa("theirs", {MANAGED_BY: "helm"}))
    core.create_namespaced_service_account(NS, new_sa("plain"))

    def names(result: Any) -> list[str]:
        return sorted(i.metadata.name for i in result.items)

    in_ns = core.list_namespaced_service_account(NS)
    assert (in_ns.kind, names(in_ns)) == ("ServiceAccountList", ["mine", "plain", "theirs"])
    assert in_ns.metadata.resource_version
    portal = f"{MANAGED_BY}=workload-identity-portal"
    assert names(core.list_namespaced_service_account(NS, label_selector=portal)) == ["mine"]
    assert names(core.list_service_account_for_all_namespaces(label_selector=portal)) == ["also-mine", "mine"]
    assert names(core.list_namespaced_service_account(NS, label_selector=MANAGED_BY)) == ["mine", "theirs"]
    assert names(core.list_namespaced_service_account(NS, label_selector=f"!{MANAGED_BY}")) == ["plain"]
    assert names(core.list_namespaced_service_account(NS, label_selector=f"{MANAGED_BY} in (helm,x)")) == ["theirs"]
    assert names(core.list_namespaced_service_account(NS, field_selector="metadata.name=plain")) == ["plain"]
    e = fails(core.list_namespaced_service_account, NS, label_selector="a=(")
    assert (e.status, status_of(e)["reason"]) == (400, "BadRequest")


def test_list_items_carry_no_kind_or_api_version(
    core: client.CoreV1Api, emu: Emulator, cluster: Cluster, http: requests.Session, static_token: str
) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    body = http.get(
        f"{emu.cluster_api(cluster)}/api/v1/namespaces/{NS}/serviceaccounts",
        headers={"Authorization": f"Bearer {static_token}"},
        timeout=5,
    ).json()
    assert (body["kind"], body["apiVersion"]) == ("ServiceAccountList", "v1")
    assert "kind" not in body["items"][0] and "apiVersion" not in body["items"][0]


# ----- replace ----------------------------------------------------------------------------------------------


def test_replace_updates_the_object_and_bumps_its_resource_version(core: client.CoreV1Api) -> None:
    sa = core.create_namespaced_service_account(NS, new_sa("sa1"))
    sa.metadata.annotations = {WI_ANNOTATION: "cid-2"}
    replaced = core.replace_namespaced_service_account("sa1", NS, sa)
    assert replaced.metadata.annotations == {WI_ANNOTATION: "cid-2"}
    assert int(replaced.metadata.resource_version) > int(sa.metadata.resource_version)
    assert (replaced.metadata.uid, replaced.metadata.creation_timestamp) == (
        sa.metadata.uid,
        sa.metadata.creation_timestamp,
    )


def test_replace_with_a_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    stale = core.create_namespaced_service_account(NS, new_sa("sa1"))
    core.patch_namespaced_service_account("sa1", NS, {"metadata": {"labels": {"x": "1"}}})
    e = fails(core.replace_namespaced_service_account, "sa1", NS, stale)
    assert (e.status, e.reason) == (409, "Conflict")
    assert status_of(e) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on serviceaccounts "sa1": the object has been modified; please '
        "apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "sa1", "kind": "serviceaccounts"},
        "code": 409,
    }


def test_replace_without_a_resource_version_is_unconditional(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    core.patch_namespaced_service_account("sa1", NS, {"metadata": {"labels": {"x": "1"}}})
    replaced = core.replace_namespaced_service_account("sa1", NS, new_sa("sa1", annotations={WI_ANNOTATION: "c"}))
    assert (replaced.metadata.annotations, replaced.metadata.labels) == ({WI_ANNOTATION: "c"}, None)


def test_replace_of_a_missing_service_account_is_404(core: client.CoreV1Api) -> None:
    assert fails(core.replace_namespaced_service_account, "nope", NS, new_sa("nope")).status == 404


def test_replace_with_another_name_in_the_body_is_400(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    e = fails(core.replace_namespaced_service_account, "sa1", NS, new_sa("sa2"))
    assert (e.status, status_of(e)["reason"]) == (400, "BadRequest")
    assert status_of(e)["message"] == "the name of the object (sa2) does not match the name on the URL (sa1)"


def test_a_no_op_replace_keeps_the_resource_version(core: client.CoreV1Api) -> None:
    sa = core.create_namespaced_service_account(NS, new_sa("sa1", {"a": "b"}))
    again = core.replace_namespaced_service_account("sa1", NS, sa)
    assert again.metadata.resource_version == sa.metadata.resource_version


# ----- patch ------------------------------------------------------------------------------------------------


def test_strategic_merge_patch_merges_maps_deletes_nulls_and_merges_secrets_by_name(
    core: client.CoreV1Api,
) -> None:
    created = core.create_namespaced_service_account(
        NS, {"metadata": {"name": "sa1", "labels": {"a": "1", "b": "2"}}, "secrets": [{"name": "s1"}]}
    )
    patched = core.patch_namespaced_service_account(  # a dict body goes as strategic-merge-patch+json
        "sa1", NS, {"metadata": {"labels": {"a": None, "c": "3"}}, "secrets": [{"name": "s2"}]}
    )
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert [s.name for s in patched.secrets] == ["s1", "s2"]
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    dropped = core.patch_namespaced_service_account("sa1", NS, {"secrets": [{"name": "s1", "$patch": "delete"}]})
    assert [s.name for s in dropped.secrets] == ["s2"]


def test_merge_patch_replaces_lists_and_deletes_nulls(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(
        NS, {"metadata": {"name": "sa1", "annotations": {WI_ANNOTATION: "old"}}, "secrets": [{"name": "s1"}]}
    )
    patched = core.patch_namespaced_service_account(
        "sa1",
        NS,
        {"metadata": {"annotations": {WI_ANNOTATION: None, "x": "y"}}, "secrets": [{"name": "s2"}]},
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.annotations == {"x": "y"}
    assert [s.name for s in patched.secrets] == ["s2"]


def test_json_patch_applies_operations_and_a_failed_test_is_422(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1", annotations={WI_ANNOTATION: "old"}))
    patched = core.patch_namespaced_service_account(  # a list body goes as json-patch+json
        "sa1",
        NS,
        [
            {"op": "replace", "path": "/metadata/annotations/azure.workload.identity~1client-id", "value": "new"},
            {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}},
        ],
    )
    assert (patched.metadata.annotations, patched.metadata.labels) == ({WI_ANNOTATION: "new"}, {"k": "v"})
    e = fails(
        core.patch_namespaced_service_account,
        "sa1",
        NS,
        [{"op": "test", "path": "/metadata/labels/k", "value": "other"}],
    )
    assert e.status == 422


def test_a_patch_carrying_a_stale_resource_version_is_409(core: client.CoreV1Api) -> None:
    sa = core.create_namespaced_service_account(NS, new_sa("sa1"))
    core.patch_namespaced_service_account("sa1", NS, {"metadata": {"labels": {"x": "1"}}})
    stale = {"metadata": {"resourceVersion": sa.metadata.resource_version, "labels": {"y": "2"}}}
    e = fails(core.patch_namespaced_service_account, "sa1", NS, stale)
    assert (e.status, status_of(e)["reason"]) == (409, "Conflict")


def test_an_apply_patch_without_apiversion_and_kind_is_refused(
    core: client.CoreV1Api, emu: Emulator, cluster: Cluster, http: requests.Session, static_token: str
) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    r = http.patch(
        f"{emu.cluster_api(cluster)}/api/v1/namespaces/{NS}/serviceaccounts/sa1?fieldManager=x",
        data="metadata: {labels: {a: b}}",
        headers={"Authorization": f"Bearer {static_token}", "Content-Type": "application/apply-patch+yaml"},
        timeout=5,
    )
    assert (r.status_code, r.json()["message"]) == (400, "invalid object type: /, Kind=")


def test_an_apply_patch_needs_a_field_manager(
    core: client.CoreV1Api, emu: Emulator, cluster: Cluster, http: requests.Session, static_token: str
) -> None:
    r = http.patch(
        f"{emu.cluster_api(cluster)}/api/v1/namespaces/{NS}/serviceaccounts/sa1",
        data="apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa1}\n",
        headers={"Authorization": f"Bearer {static_token}", "Content-Type": "application/apply-patch+yaml"},
        timeout=5,
    )
    assert (r.status_code, r.json()["reason"]) == (422, "Invalid")
    assert r.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_patching_a_missing_service_account_is_404(core: client.CoreV1Api) -> None:
    assert fails(core.patch_namespaced_service_account, "nope", NS, {"metadata": {}}).status == 404


# ----- delete -----------------------------------------------------------------------------------------------


def test_delete_returns_the_deleted_service_account_and_it_is_gone(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service_account(NS, new_sa("sa1"))
    deleted, status, _ = core.delete_namespaced_service_account_with_http_info("sa1", NS)
    assert status == 200
    assert (deleted.kind, deleted.metadata.uid) == ("ServiceAccount", created.metadata.uid)
    assert fails(core.read_namespaced_service_account, "sa1", NS).status == 404
    assert fails(core.delete_namespaced_service_account, "sa1", NS).status == 404


def test_delete_honours_a_resource_version_precondition(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    e = fails(core.delete_namespaced_service_account, "sa1", NS, body=options)
    assert (e.status, status_of(e)["reason"]) == (409, "Conflict")


# ----- TokenRequest and issuer discovery --------------------------------------------------------------------


def test_token_request_mints_a_token_that_verifies_against_the_issuers_jwks(
    core: client.CoreV1Api, emu: Emulator, cluster: Cluster, http: requests.Session
) -> None:
    sa = core.create_namespaced_service_account(NS, new_sa("sa1"))
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["api://AzureADTokenExchange"])
    )
    answer, status, _ = core.create_namespaced_service_account_token_with_http_info("sa1", NS, request)
    assert (status, answer.kind, answer.spec.expiration_seconds) == (201, "TokenRequest", 3600)

    issuer = emu.cluster_issuer(cluster)
    discovery = http.get(issuer + ".well-known/openid-configuration", timeout=5).json()  # no auth needed
    assert discovery["issuer"] == issuer and issuer.endswith("/")
    jwks = jwt.PyJWKSet.from_dict(http.get(discovery["jwks_uri"], timeout=5).json())
    kid = jwt.get_unverified_header(answer.status.token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        answer.status.token,
        key.key,
        algorithms=["RS256"],
        audience="api://AzureADTokenExchange",
        issuer=issuer,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},  # the emulator clock may move
    )
    assert claims["sub"] == f"system:serviceaccount:{NS}:sa1"
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["kubernetes.io"] == {"namespace": NS, "serviceaccount": {"name": "sa1", "uid": sa.metadata.uid}}


def test_token_request_defaults_the_audience_to_the_issuer(
    core: client.CoreV1Api, emu: Emulator, cluster: Cluster
) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    answer = core.create_namespaced_service_account_token("sa1", NS, {"spec": {"expirationSeconds": 600}})
    claims = jwt.decode(answer.status.token, options={"verify_signature": False})
    assert (claims["aud"], claims["exp"] - claims["iat"]) == ([emu.cluster_issuer(cluster)], 600)


def test_token_request_below_ten_minutes_is_422(core: client.CoreV1Api) -> None:
    core.create_namespaced_service_account(NS, new_sa("sa1"))
    e = fails(core.create_namespaced_service_account_token, "sa1", NS, {"spec": {"expirationSeconds": 60}})
    assert (e.status, status_of(e)["details"]["causes"][0]["field"]) == (422, "spec.expirationSeconds")


def test_token_request_for_a_missing_service_account_is_404(core: client.CoreV1Api) -> None:
    e = fails(core.create_namespaced_service_account_token, "nope", NS, {"spec": {}})
    assert (e.status, status_of(e)["message"]) == (404, 'serviceaccounts "nope" not found')


def test_the_api_server_serves_the_same_issuer_discovery_behind_auth(
    emu: Emulator, cluster: Cluster, http: requests.Session, static_token: str
) -> None:
    url = emu.cluster_api(cluster) + "/.well-known/openid-configuration"
    assert http.get(url, timeout=5).status_code == 401
    doc = http.get(url, headers={"Authorization": f"Bearer {static_token}"}, timeout=5).json()
    assert doc == {
        "issuer": emu.cluster_issuer(cluster),
        "jwks_uri": f"{emu.url}/oidc/{cluster.issuer_id}/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    keys = http.get(emu.cluster_api(cluster) + "/openid/v1/jwks", headers={"Authorization": f"Bearer {static_token}"})
    assert keys.json()["keys"][0]["kid"] == emu.cluster_key(cluster.name).kid


def test_well_known_api_needs_preload_content_false_as_against_a_real_api_server(
    emu: Emulator, cluster: Cluster, static_token: str
) -> None:
    # The API server answers application/json and the client's response type is "str": it returns str(dict).
    well_known = client.WellKnownApi(api_client(emu, cluster, static_token))
    assert well_known.get_service_account_issuer_open_id_configuration().startswith("{'issuer'")
    raw = well_known.get_service_account_issuer_open_id_configuration(_preload_content=False)
    assert json.loads(raw.data)["issuer"] == emu.cluster_issuer(cluster)


def test_an_unknown_issuer_is_404(emu: Emulator, http: requests.Session) -> None:
    assert http.get(f"{emu.url}/oidc/nope/.well-known/openid-configuration", timeout=5).status_code == 404


# ----- kubeconfig -------------------------------------------------------------------------------------------


def test_load_kube_config_reaches_the_cluster(
    emu: Emulator, cluster: Cluster, static_token: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": cluster.name,
                        "cluster": {"server": emu.cluster_api(cluster), "certificate-authority": str(emu.tls.ca_cert)},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": static_token}}],
                "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": "admin"}}],
                "current-context": cluster.name,
            }
        )
    )
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = False
    api = client.CoreV1Api(client.ApiClient(cfg))
    assert api.read_namespace(NS).metadata.name == NS
    assert api.create_namespaced_service_account(NS, new_sa("from-kubeconfig")).metadata.name == "from-kubeconfig"
