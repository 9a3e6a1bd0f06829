"""A small client for the control API, for tests, benchmarks and scripts (works in- or out-of-process)."""

from __future__ import annotations

from typing import Any

import requests


class EmulatorClient:
    def __init__(self, url: str, ca_file: str):
        self.url = url.rstrip("/") + "/_emulator"
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not override our CA
        self.session.verify = ca_file

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.session.request(method, self.url + path, timeout=30, **kw)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def add_fault(self, path: str, **spec: Any) -> dict[str, Any]:
        """Add a fault rule: path regex + method/body match; status/code/message/retry_after, latency_ms or drop;
        times=N or probability=p."""
        return self._call("POST", "/faults", json={"path": path, **spec})

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["value"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def settings(self, **changes: Any) -> dict[str, Any]:
        if changes:
            return self._call("PATCH", "/settings", json=changes)
        return self._call("GET", "/settings")

    def calls(
        self, *, since: int = 0, method: str | None = None, path: str | None = None, surface: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"since": since, "method": method, "path": path, "surface": surface}.items() if v}
        return self._call("GET", "/calls", params=params)["value"]

    def last_seq(self) -> int:
        return self._call("GET", "/calls", params={"since": 10**12})["last_seq"]

    def clear_calls(self) -> None:
        self._call("DELETE", "/calls")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock", json={"advance": seconds})

    def patch_cluster(self, name: str, **changes: str) -> dict[str, Any]:
        """Change how ARM describes cluster `name` (e.g. fqdn=...) until the next reset."""
        return self._call("PATCH", f"/clusters/{name}", json=changes)

    def rebuild_cluster(self, name: str) -> dict[str, Any]:
        """Rebuild cluster `name` under the same ARM resource: a new OIDC issuer and signing keys (until reset)."""
        return self._call("POST", f"/clusters/{name}/rebuild")

    def add_namespace(self, cluster: str, name: str) -> dict[str, Any]:
        return self._call("POST", "/namespaces", json={"cluster": cluster, "name": name})

    def delete_namespace(self, cluster: str, name: str) -> None:
        self._call("DELETE", f"/namespaces/{cluster}/{name}")

    def seed_k8s_object(self, cluster: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Put a Pod, AzureIdentity or AzureIdentityBinding on `cluster` (its metadata.namespace) until reset."""
        return self._call("POST", f"/k8s/{cluster}/objects", json=obj)

    # -- the directory: people change at run time; reset() undoes it ------------------------------------
    def user(self, tenant: str, oid: str) -> dict[str, Any]:
        return self._call("GET", f"/tenants/{tenant}/users/{oid}")

    def put_user(self, tenant: str, oid: str, *, name: str, upn: str, **fields: Any) -> dict[str, Any]:
        """Add a person (or replace them): email, groups, account_enabled are optional."""
        return self._call("PUT", f"/tenants/{tenant}/users/{oid}", json={"name": name, "upn": upn, **fields})

    def patch_user(self, tenant: str, oid: str, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/tenants/{tenant}/users/{oid}", json=changes)

    def set_user_groups(self, tenant: str, oid: str, groups: list[str]) -> dict[str, Any]:
        return self.patch_user(tenant, oid, groups=groups)

    def user_token(self, tenant: str, oid: str, *, client_id: str, scope: str) -> str:
        """A delegated access token for the user, issued as the authorization-code flow would (same claims)."""
        body = {"client_id": client_id, "scope": scope}
        return self._call("POST", f"/tenants/{tenant}/users/{oid}/token", json=body)["access_token"]

    def disable_user(self, tenant: str, oid: str) -> dict[str, Any]:
        return self.patch_user(tenant, oid, account_enabled=False)

    def delete_user(self, tenant: str, oid: str) -> None:
        self._call("DELETE", f"/tenants/{tenant}/users/{oid}")

    def put_group(self, tenant: str, gid: str, *, name: str, groups: list[str] | None = None) -> dict[str, Any]:
        """Add a group (or replace it), nested in `groups`; reset() undoes it."""
        return self._call("PUT", f"/tenants/{tenant}/groups/{gid}", json={"name": name, "groups": groups or []})

    # -- the incoming-webhook sink ---------------------------------------------------------------------------
    def webhook_url(self, kind: str, name: str) -> str:
        """Where a portal posts to the sink as to a Slack (`slack`) or Teams Workflows (`teams`) webhook."""
        return f"{self.url.removesuffix('/_emulator')}/webhooks/{kind}/{name}"

    def webhooks(self, name: str) -> list[dict[str, Any]]:
        """What the sink accepted under `name`: [{kind, body, content_type, at}], oldest first."""
        return self._call("GET", f"/webhooks/{name}")["value"]
