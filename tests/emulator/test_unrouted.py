"""Paths and methods no surface routes answer in the error shape of the surface they fall under."""

from __future__ import annotations

from typing import Any

import requests

from emulator import Emulator


def get(http: requests.Session, emu: Emulator, path: str, method: str = "GET") -> requests.Response:
    return http.request(method, emu.url + path, timeout=5)


def test_an_unknown_entra_path_gets_the_oauth_error_body(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/nope/oauth2/v2.0/nothing")
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "invalid_request" and {"error_description", "trace_id", "correlation_id"} <= set(body)


def test_a_get_on_the_token_endpoint_is_aadsts900561(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/common/oauth2/v2.0/token")
    assert (r.status_code, r.json()["error_codes"]) == (400, [900561])
    assert r.json()["error_description"].startswith(
        "AADSTS900561: The endpoint only accepts POST, OPTIONS requests. Received a GET request."
    )


def test_an_unknown_graph_segment_is_graphs_bad_request(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/graph/v1.0/nonsense")
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (400, "BadRequest")
    assert error["message"] == "Resource not found for the segment 'nonsense'."
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])


def test_a_method_graph_does_not_take_is_405_in_graphs_shape(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/graph/v1.0/me", method="DELETE")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "Request_BadRequest")


def test_an_unknown_cluster_is_a_kubernetes_status(http: requests.Session, emu: Emulator) -> None:
    body: dict[str, Any] = get(http, emu, "/k8s/no-such-cluster/api/v1").json()
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 404, "NotFound")
    assert body["message"] == "the server could not find the requested resource"


def test_an_unknown_path_at_a_clusters_own_origin_is_a_status(http: requests.Session, emu: Emulator) -> None:
    cluster = emu.config.clusters[0]
    headers = {"Authorization": f"Bearer {cluster.static_tokens[0].token}"}
    r = http.get(emu.cluster_origin(cluster) + "/no/such/path", headers=headers, timeout=5)
    assert (r.status_code, r.json()["kind"], r.json()["reason"]) == (404, "Status", "NotFound")


def test_an_unknown_control_path_is_json(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/_emulator/nope")
    assert (r.status_code, r.json()) == (404, {"error": "no control route GET /_emulator/nope"})


def test_an_unknown_issuer_path_is_gos_plain_404(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/oidc/nope/keys")
    assert (r.status_code, r.text) == (404, "404 page not found\n")


def test_an_unknown_webhook_kind_is_no_service(http: requests.Session, emu: Emulator) -> None:
    r = get(http, emu, "/webhooks/nope/x", method="POST")
    assert (r.status_code, r.text) == (404, "no_service")
