"""The real az CLI (azure-cli from PyPI, in .venv-az: `make test` installs it), unchanged, against the emulator.

Each test gets its own AZURE_CONFIG_DIR, registers the emulator as a cloud with endpoint discovery (az reads
`GET /metadata/endpoints`) and trusts the emulator CA through REQUESTS_CA_BUNDLE. Configuration only:
`core.instance_discovery=false` (AZURE_CORE_INSTANCE_DISCOVERY), as for Azure Stack, since msal would otherwise
ask login.microsoftonline.com whether the emulator's authority is known.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator import Emulator
from emulator.client import EmulatorClient
from emulator.config import App, Tenant

AZ = Path(__file__).resolve().parents[2] / ".venv-az" / "bin" / "az"
if not AZ.exists():
    if os.environ.get("CI"):
        pytest.fail("the az CLI must be in .venv-az in CI (make test installs requirements-az.txt)", pytrace=False)
    pytest.skip("the az CLI is not in .venv-az; `make test` installs it", allow_module_level=True)

pytestmark = pytest.mark.azcli
RG = "rg-aks-demo-identities"
Az = Callable[..., Any]


@pytest.fixture
def az_env(emu: Emulator, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{AZ.parent}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AZURE_CONFIG_DIR": str(tmp_path / "azure"),
        "REQUESTS_CA_BUNDLE": str(emu.tls.ca_bundle),
        "AZURE_CORE_COLLECT_TELEMETRY": "no",
        "AZURE_CORE_INSTANCE_DISCOVERY": "false",
        "AZURE_CORE_NO_COLOR": "true",
    }


@pytest.fixture
def az(emu: Emulator, az_env: dict[str, str]) -> Az:
    """Run az with a config dir of its own; returns parsed JSON output (or the CompletedProcess when check=False)."""
    env = az_env

    def run(*args: str, check: bool = True) -> Any:
        done = subprocess.run([str(AZ), *args], env=env, capture_output=True, text=True, timeout=120, check=False)
        if not check:
            return done
        if done.returncode != 0:
            pytest.fail(f"az {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    # A base URL ending in "/": az asks for //metadata/endpoints, which the emulator answers as ARM does.
    run("cloud", "register", "-n", "Emulator", "--endpoint-resource-manager", f"{emu.url}/")
    run("cloud", "set", "-n", "Emulator")
    return run


@pytest.fixture
def logged_in(az: Az, tenant: Tenant, portal_app: App) -> Az:
    az("login", "--service-principal", "-u", portal_app.client_id, "-p", portal_app.secrets[0], "--tenant", tenant.id)
    return az


def test_cloud_register_discovers_the_emulator_endpoints(az: Az, emu: Emulator) -> None:
    cloud = az("cloud", "show", "-n", "Emulator")
    assert cloud["endpoints"]["resourceManager"] == f"{emu.url}/"
    assert cloud["endpoints"]["activeDirectory"] == emu.url
    assert cloud["endpoints"]["microsoftGraphResourceId"] == f"{emu.url}/graph/"


def test_login_with_a_secret_lists_and_sets_the_account(logged_in: Az, emu: Emulator, tenant: Tenant) -> None:
    sub = emu.config.subscriptions[0]
    account = logged_in("account", "show")
    assert (account["id"], account["tenantId"], account["user"]["type"]) == (sub.id, tenant.id, "servicePrincipal")
    assert [a["id"] for a in logged_in("account", "list")] == [s.id for s in emu.config.subscriptions]
    logged_in("account", "set", "--subscription", sub.name)
    assert logged_in("account", "show")["name"] == sub.name


def test_group_show_and_list(logged_in: Az, emu: Emulator) -> None:
    groups = emu.config.subscriptions[0].resource_groups
    assert logged_in("group", "show", "-n", RG)["name"] == RG
    assert [g["name"] for g in logged_in("group", "list")] == [g.name for g in groups]


def test_identity_and_federated_credential_lifecycle(logged_in: Az) -> None:
    made = logged_in("identity", "create", "-g", RG, "-n", "id-az", "-l", "westeurope")
    assert logged_in("identity", "show", "-g", RG, "-n", "id-az")["clientId"] == made["clientId"]
    assert [i["name"] for i in logged_in("identity", "list", "-g", RG)] == ["id-az"]
    fic = ["identity", "federated-credential"]
    where = ["-g", RG, "--identity-name", "id-az"]
    logged_in(
        *fic, "create", *where, "-n", "fic-az", "--issuer", "https://issuer.example/",
        "--subject", "system:serviceaccount:ns:sa", "--audiences", "api://AzureADTokenExchange",
    )  # fmt: skip
    shown = logged_in(*fic, "show", *where, "-n", "fic-az")
    assert (shown["issuer"], shown["subject"]) == ("https://issuer.example/", "system:serviceaccount:ns:sa")
    assert [f["name"] for f in logged_in(*fic, "list", *where)] == ["fic-az"]
    logged_in(*fic, "delete", *where, "-n", "fic-az", "--yes")
    assert logged_in(*fic, "list", *where) == []
    logged_in("identity", "delete", "-g", RG, "-n", "id-az")
    assert logged_in("identity", "list", "-g", RG) == []


def test_role_definition_by_name_and_assignment_create_list_delete(logged_in: Az, emu: Emulator) -> None:
    [role] = logged_in("role", "definition", "list", "--name", "Key Vault Secrets User")
    assert role["roleName"] == "Key Vault Secrets User"
    pipeline = emu.config.tenants[0].apps[1]
    sub = emu.config.subscriptions[0].id
    scope = f"/subscriptions/{sub}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
    made = logged_in(
        "role", "assignment", "create", "--role", "Key Vault Secrets User", "--assignee-object-id",
        pipeline.object_id, "--assignee-principal-type", "ServicePrincipal", "--scope", scope,
    )  # fmt: skip
    assert made["roleDefinitionId"].endswith("/" + role["name"])
    listed = logged_in("role", "assignment", "list", "--scope", scope)
    # The principal's name comes from Graph (POST /v1.0/directoryObjects/getByIds): for a service principal, az
    # shows its first servicePrincipalNames entry, the appId.
    assert [(a["principalName"], a["roleDefinitionName"]) for a in listed] == [
        (pipeline.client_id, "Key Vault Secrets User")
    ]
    logged_in("role", "assignment", "delete", "--ids", made["id"])
    assert logged_in("role", "assignment", "list", "--scope", scope) == []


def test_aks_show_gives_the_oidc_issuer(logged_in: Az, emu: Emulator) -> None:
    cluster = emu.config.clusters[0]
    rg = next(
        g.name for s in emu.config.subscriptions for g in s.resource_groups
        if any(r.name == cluster.name for r in g.resources)
    )  # fmt: skip
    issuer = logged_in("aks", "show", "-g", rg, "-n", cluster.name, "--query", "oidcIssuerProfile.issuerUrl")
    assert issuer == emu.cluster_issuer(cluster)


def test_login_with_a_federated_token_from_the_cluster(
    logged_in: Az, az: Az, emu: Emulator, http: requests.Session, tenant: Tenant
) -> None:
    """The tutorial's login: a ServiceAccount token of the cluster, exchanged for the identity it is federated to."""
    cluster = emu.config.clusters[0]
    ns, sa = "team-payments", "wi-az"
    ident = logged_in("identity", "create", "-g", RG, "-n", "id-fed", "-l", "westeurope")
    logged_in(
        "identity", "federated-credential", "create", "-g", RG, "--identity-name", "id-fed", "-n", "fic-fed",
        "--issuer", emu.cluster_issuer(cluster), "--subject", f"system:serviceaccount:{ns}:{sa}",
        "--audiences", "api://AzureADTokenExchange",
    )  # fmt: skip
    api = f"{emu.cluster_api(cluster)}/api/v1/namespaces/{ns}/serviceaccounts"
    headers = {"Authorization": f"Bearer {cluster.static_tokens[0].token}"}
    http.post(api, json={"metadata": {"name": sa}}, headers=headers, timeout=10).raise_for_status()
    request = {"spec": {"audiences": ["api://AzureADTokenExchange"]}}
    made = http.post(f"{api}/{sa}/token", json=request, headers=headers, timeout=10)
    made.raise_for_status()
    token = made.json()["status"]["token"]
    az("logout")
    az("login", "--service-principal", "-u", ident["clientId"], "--federated-token", token, "--tenant", tenant.id)
    assert az("account", "show")["user"]["name"] == ident["clientId"]
    assert [g["name"] for g in az("group", "list")][:1] == [emu.config.subscriptions[0].resource_groups[0].name]


def test_unknown_api_versions_are_refused_as_arm_does(logged_in: Az, emu: Emulator) -> None:
    sub = emu.config.subscriptions[0].id
    url = (
        f"{emu.url}/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    )
    done = logged_in("rest", "--url", f"{url}?api-version=2099-01-01", check=False)
    assert done.returncode != 0 and "NoRegisteredProviderFound" in done.stderr
    done = logged_in("rest", "--url", f"{emu.url}/metadata/endpoints?api-version=1999-01-01", check=False)
    assert done.returncode != 0 and "InvalidApiVersionParameter" in done.stderr


def test_keyvault_secret_set_and_show_by_id(logged_in: Az, emu: Emulator, portal_app: App) -> None:
    """az's Key Vault client meets the 401 challenge, fetches a vault token and follows the secret's id back.

    `--vault-name` becomes `https://{name}.vault.azure.net` (the cloud's suffix), which has no host here, so the
    vault name given is the emulator's path to the vault: az appends the suffix, the emulator accepts it."""
    sub = emu.config.subscriptions[0].id
    vault = "kv-payments-demo"
    scope = f"/subscriptions/{sub}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/{vault}"
    where = ["--vault-name", f"{emu.url.removeprefix('https://')}/keyvault/{vault}"]
    refused = logged_in("keyvault", "secret", "set", *where, "-n", "api-token", "--value", "v1", check=False)
    assert refused.returncode != 0 and "ForbiddenByRbac" in refused.stderr
    logged_in(
        "role", "assignment", "create", "--role", "Key Vault Secrets Officer", "--assignee-object-id",
        portal_app.object_id, "--assignee-principal-type", "ServicePrincipal", "--scope", scope,
    )  # fmt: skip
    first = logged_in("keyvault", "secret", "set", *where, "-n", "api-token", "--value", "v1")
    second = logged_in("keyvault", "secret", "set", *where, "-n", "api-token", "--value", "v2")
    assert second["id"].startswith(f"{emu.url}/secrets/api-token/") and second["id"] != first["id"]
    assert logged_in("keyvault", "secret", "show", "--id", first["id"])["value"] == "v1"
    assert logged_in("keyvault", "secret", "show", "--id", second["id"])["value"] == "v2"
    current = logged_in("keyvault", "secret", "show", "--id", f"{emu.url}/secrets/api-token")
    assert (current["value"], current["id"]) == ("v2", second["id"])
    configured = logged_in("keyvault", "secret", "show", "--id", f"{emu.url}/secrets/db-password")
    assert configured["value"] == "correct-horse-battery-staple"


def test_role_assignment_by_assignee_resolved_through_graph(logged_in: Az, emu: Emulator, tenant: Tenant) -> None:
    """`--assignee` is an appId or a UPN: az finds its object id with Graph list filters, then deletes by role."""
    pipeline, user = emu.config.tenants[0].apps[1], tenant.users[0]
    sub = emu.config.subscriptions[0].id
    scope = f"/subscriptions/{sub}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
    for assignee in (pipeline.client_id, user.upn):
        logged_in("role", "assignment", "create", "--role", "Key Vault Secrets User", "--assignee", assignee,
                  "--scope", scope)  # fmt: skip
    listed = logged_in("role", "assignment", "list", "--scope", scope)
    assert sorted(a["principalId"] for a in listed) == sorted([pipeline.object_id, user.oid])
    logged_in("role", "assignment", "delete", "--role", "Key Vault Secrets User", "--assignee", pipeline.client_id,
              "--scope", scope)  # fmt: skip
    assert [a["principalId"] for a in logged_in("role", "assignment", "list", "--scope", scope)] == [user.oid]
    logged_in("role", "assignment", "delete", "--role", "Key Vault Secrets User", "--assignee", user.upn,
              "--scope", scope)  # fmt: skip
    assert logged_in("role", "assignment", "list", "--scope", scope) == []
    unknown = logged_in(
        "role", "assignment", "delete", "--assignee", "nobody@example.com", "--scope", scope, check=False
    )
    assert unknown.returncode != 0 and "Cannot find user or service principal" in unknown.stderr


def test_login_as_a_demo_user_with_a_device_code(
    az: Az, az_env: dict[str, str], emu: Emulator, http: requests.Session, control: EmulatorClient, tenant: Tenant
) -> None:
    """`az login --use-device-code`: az prints the emulator's /devicelogin and a code; the person enters the code
    there and picks their account while az polls; az then lists the user's tenants and subscriptions."""
    control.settings(device_code_interval_seconds=1)
    user = tenant.users[0]
    login = subprocess.Popen(
        [str(AZ), "login", "--use-device-code", "--allow-no-subscriptions"],
        env=az_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert login.stderr is not None
        line = login.stderr.readline()
        shown = re.search(r"open the page (\S+) and enter the code (\w+)", line)
        assert shown, line
        assert shown.group(1) == f"{emu.url}/devicelogin"
        wrong = http.post(f"{emu.url}/devicelogin", data={"otc": "NOTACODE"}, timeout=10)
        assert wrong.status_code == 400 and "Check the code and try again" in wrong.text
        picker = http.post(f"{emu.url}/devicelogin", data={"otc": shown.group(2)}, timeout=10)
        assert picker.ok and f'data-upn="{user.upn}"' in picker.text
        done = http.post(f"{emu.url}/devicelogin", data={"otc": shown.group(2), "user": user.oid}, timeout=10)
        assert done.ok and "signed in" in done.text
        again = http.post(f"{emu.url}/devicelogin", data={"otc": shown.group(2), "user": user.oid}, timeout=10)
        assert again.status_code == 400  # a code approves one sign-in
        out, err = login.communicate(timeout=120)
    finally:
        login.kill()
    assert login.returncode == 0, err
    account = az("account", "show")
    assert (account["user"]["name"], account["user"]["type"], account["tenantId"]) == (user.upn, "user", tenant.id)
    token = az("account", "get-access-token", "--query", "accessToken", "-o", "tsv", check=False)
    assert token.returncode == 0, token.stderr
