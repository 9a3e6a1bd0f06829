"""What a ready identity hands over (requests_app/handoff.py): pure functions, checked by parsing what they write."""

from __future__ import annotations

import ast
import shlex

import pytest
import yaml
from kubernetes import client as k8s

from requests_app import handoff
from requests_app.models import Cluster, IdentityRequest, RoleGrant
from tests.pysource import parse

SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
TENANT = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-Payments-demo"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stpayments"
CONTAINER = f"{ACCOUNT}/blobServices/default/containers/invoices"
BUS = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.ServiceBus/namespaces/sb-payments"
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aks-demo-identities/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/aks-demo_team-payments_payments-api"
)
PRINCIPAL = "d2d2d2d2-0000-4000-8000-0000000000f1"


def request_for() -> IdentityRequest:
    """An unsaved ready request (nothing here touches the database)."""
    cluster = Cluster(name="aks-demo", subscription_id=SUB, resource_group="rg-aks-demo-identities")
    return IdentityRequest(
        cluster=cluster,
        namespace="team-payments",
        service_account="payments-api",
        identity_name="aks-demo_team-payments_payments-api",
        fic_name="aks-demo-team-payments-payments-api",
        identity_resource_id=IDENTITY_ID,
        client_id="c1c1c1c1-0000-4000-8000-00000000c11d",
        principal_id=PRINCIPAL,
    )


def grants(*pairs: tuple[str, str]) -> list[RoleGrant]:
    return [RoleGrant(role_name=role, scope=scope) for role, scope in pairs]


# ---- the Deployment --------------------------------------------------------------------------------------


def deployment(namespace: str = "team-payments", sa: str = "payments-api") -> dict:
    return yaml.safe_load(handoff.deployment_yaml(namespace, sa))


def test_the_deployment_is_a_valid_apps_v1_deployment():
    doc = deployment()
    # The Kubernetes client refuses a Deployment without what the API requires (selector, template, containers).
    model = k8s.ApiClient()._ApiClient__deserialize(doc, "V1Deployment")
    assert (model.api_version, model.kind) == ("apps/v1", "Deployment")
    assert model.metadata.namespace == "team-payments"
    assert model.spec.selector.match_labels.items() <= model.spec.template.metadata.labels.items()


def test_the_deployment_runs_as_the_service_account_and_opts_in_to_workload_identity():
    template = deployment()["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "payments-api"
    # A string, as the webhook reads it: a YAML boolean would not opt the pod in.
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"


def test_the_deployment_is_fit_for_the_restricted_pod_security_standard():
    spec = deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["image"] == handoff.PLACEHOLDER_IMAGE


def test_a_long_service_account_name_still_makes_valid_labels():
    sa = "a" * 60 + "-" + "b" * 100  # a DNS subdomain may be 253 long; a label value only 63
    labels = deployment(sa=sa)["spec"]["template"]["metadata"]["labels"]
    assert len(labels["app"]) <= 63 and labels["app"][-1].isalnum()
    assert deployment(sa=sa)["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_kubectl_shows_the_service_account_the_portal_made():
    text = handoff.kubectl_commands("team-payments", "payments-api")
    assert "kubectl get serviceaccount payments-api -n team-payments -o yaml" in text
    assert "kubectl describe serviceaccount payments-api -n team-payments" in text


def test_the_service_account_yaml_is_for_reference_and_carries_the_ids():
    doc = yaml.safe_load(handoff.service_account_yaml("team-payments", "payments-api", "cid", TENANT))
    assert doc["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "cid",
        "azure.workload.identity/tenant-id": TENANT,
    }
    assert handoff.service_account_yaml("n", "s", "c", "t").startswith("# For reference only")


# ---- resources and programs ----------------------------------------------------------------------------------


def test_one_resource_per_distinct_scope_with_all_its_roles():
    found = handoff.resources(
        grants(
            ("Key Vault Secrets User", VAULT),
            ("Storage Blob Data Reader", ACCOUNT),
            ("Key Vault Reader", VAULT.upper()),
        )
    )
    assert [(r.scope, r.roles) for r in found] == [
        (VAULT, ("Key Vault Secrets User", "Key Vault Reader")),
        (ACCOUNT, ("Storage Blob Data Reader",)),
    ]


def calls(code: str) -> dict[str, list]:
    """Each called name in `code` with the literal arguments it was given (the program must parse)."""
    found: dict[str, list] = {}
    for node in ast.walk(parse(code)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            args += [k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)]
            found.setdefault(name, []).append(args)
    return found


def test_a_key_vault_gets_a_secret_client_on_the_vaults_real_url():
    p = handoff.program(handoff.Resource(VAULT, ("Key Vault Secrets User",)))
    used = calls(p.code)
    assert "DefaultAzureCredential" in used
    assert used["SecretClient"] == [["https://kv-payments-demo.vault.azure.net"]]
    assert "get_secret" in used
    assert p.packages == "azure-identity azure-keyvault-secrets"


def test_a_secret_scope_reads_that_secret():
    p = handoff.program(handoff.Resource(f"{VAULT}/secrets/provider-key", ()))
    assert calls(p.code)["get_secret"] == [["provider-key"]]


def test_a_storage_account_gets_a_blob_service_client():
    p = handoff.program(handoff.Resource(ACCOUNT, ("Storage Blob Data Reader",)))
    used = calls(p.code)
    assert used["BlobServiceClient"] == [["https://stpayments.blob.core.windows.net"]]
    assert "list_containers" in used
    assert p.packages == "azure-identity azure-storage-blob"


def test_a_container_scope_lists_that_container():
    used = calls(handoff.program(handoff.Resource(CONTAINER, ())).code)
    assert used["BlobServiceClient"] == [["https://stpayments.blob.core.windows.net"]]
    assert used["get_container_client"] == [["invoices"]]
    assert "list_containers" not in used


@pytest.mark.parametrize("scope", [BUS, f"/subscriptions/{SUB}/resourceGroups/rg-data", f"/subscriptions/{SUB}"])
def test_any_other_scope_gets_a_token_with_azure_identity(scope):
    p = handoff.program(handoff.Resource(scope, ()))
    used = calls(p.code)
    assert "DefaultAzureCredential" in used
    assert used["get_token"] == [["https://management.azure.com/.default"]]
    assert scope in p.code and p.packages == "azure-identity"


def test_a_name_with_quotes_cannot_break_out_of_the_program():
    hostile = f'{BUS}"); import os; os.system("id'
    code = handoff.program(handoff.Resource(hostile, ())).code
    tree = parse(code)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and n.names[0].name == "os"]
    assert [c for c in ast.walk(tree) if isinstance(c, ast.Constant) and c.value == hostile]


# ---- az CLI and portal links -----------------------------------------------------------------------------


def test_az_shows_the_identity_its_credential_and_its_role_assignments():
    lines = [shlex.split(line) for line in handoff.az_commands(request_for()).splitlines() if line.startswith("az ")]
    assert lines[0] == ["az", "identity", "show", "--ids", IDENTITY_ID]
    assert lines[1] == [
        *["az", "identity", "federated-credential", "show"],
        *["--identity-name", "aks-demo_team-payments_payments-api"],
        *["--resource-group", "rg-aks-demo-identities"],
        *["--name", "aks-demo-team-payments-payments-api"],
        *["--subscription", SUB],
    ]
    assert lines[2] == [
        *["az", "role", "assignment", "list", "--assignee", PRINCIPAL, "--all"],
        *["--subscription", SUB, "--output", "table"],
    ]


def test_az_quotes_what_the_shell_would_split():
    req = request_for()
    req.fic_name = "fic name; rm -rf ~"
    [fic] = [shlex.split(line) for line in handoff.az_commands(req).splitlines() if "federated-credential" in line]
    assert fic[fic.index("--name") + 1] == "fic name; rm -rf ~"


def test_portal_links_name_the_tenant_and_the_resource():
    assert handoff.portal_link(TENANT, VAULT) == f"https://portal.azure.com/#@{TENANT}/resource{VAULT}"


def test_the_links_are_the_identity_then_each_resource():
    found = handoff.resources(grants(("Key Vault Secrets User", VAULT), ("Storage Blob Data Reader", CONTAINER)))
    links = handoff.portal_links(request_for(), TENANT, found)
    assert [link.label for link in links] == [
        "Managed identity aks-demo_team-payments_payments-api",
        "Key Vault kv-Payments-demo",
        "Storage account stpayments, container invoices",
    ]
    assert links[0].url.endswith(f"/resource{IDENTITY_ID}")
