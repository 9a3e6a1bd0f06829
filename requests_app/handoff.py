"""What a ready identity's page hands over to those who may see its IDs: the IDs themselves, a Deployment that uses
the ServiceAccount, kubectl and az commands to look at what was made, a short program per granted resource, and
links to each resource in the Azure portal.

Pure functions of the request's stored values: nothing here calls out. The text is plain and is escaped by the
template engine where it is shown. Names that reach YAML passed DNS-1123 validation at submit; strings that reach
Python are written as literals by `_py` and those that reach a shell are quoted by `shlex.quote`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from urllib.parse import quote

from .models import IdentityRequest, RoleGrant

PORTAL_URL = "https://portal.azure.com"
# Public Azure's data-plane suffixes (the portal's clusters run there; sovereign clouds would need their own).
KEY_VAULT_SUFFIX = "vault.azure.net"
BLOB_SUFFIX = "blob.core.windows.net"
PLACEHOLDER_IMAGE = "registry.example.com/your-team/your-app:1.0.0"


@dataclass(frozen=True)
class Resource:
    """One distinct scope the identity was granted roles on, as Azure Resource Manager names it."""

    scope: str
    roles: tuple[str, ...]

    @property
    def segments(self) -> list[str]:
        return [s for s in self.scope.split("/") if s]

    def after(self, key: str) -> str:
        """The segment following `key` (case-insensitive), "" when absent: ARM IDs are name/value pairs."""
        parts = self.segments
        for i, part in enumerate(parts[:-1]):
            if part.lower() == key.lower():
                return parts[i + 1]
        return ""

    @property
    def type(self) -> str:
        """The resource type, e.g. `Microsoft.KeyVault/vaults` ("" for a subscription or resource group)."""
        provider = self.after("providers")
        if not provider:
            return ""
        parts = self.segments
        start = [p.lower() for p in parts].index("providers") + 2
        return "/".join([provider, *parts[start::2]])

    @property
    def name(self) -> str:
        return self.segments[-1] if self.segments else ""

    @property
    def kind(self) -> str:
        """What the page calls it and which program it gets: keyvault, storage, or other."""
        top = "/".join(self.type.split("/")[:2]).lower()
        if top == "microsoft.keyvault/vaults":
            return "keyvault"
        if top == "microsoft.storage/storageaccounts":
            return "storage"
        return "other"

    @property
    def label(self) -> str:
        if self.kind == "keyvault":
            return f"Key Vault {self.after('vaults')}"
        if self.kind == "storage":
            container = self.after("containers")
            account = self.after("storageAccounts")
            return f"Storage account {account}" + (f", container {container}" if container else "")
        if not self.type:
            group = self.after("resourceGroups")
            return f"Resource group {group}" if group else f"Subscription {self.after('subscriptions')}"
        return f"{self.type} {self.name}"


@dataclass(frozen=True)
class Program:
    resource: Resource
    packages: str
    code: str


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Handoff:
    tenant_id: str
    deployment_yaml: str
    service_account_yaml: str
    kubectl: str
    programs: list[Program]
    az: str
    links: list[Link]


def for_request(req: IdentityRequest, tenant_id: str) -> Handoff:
    found = resources(req.grants.all())
    return Handoff(
        tenant_id=tenant_id,
        deployment_yaml=deployment_yaml(req.namespace, req.service_account),
        service_account_yaml=service_account_yaml(req.namespace, req.service_account, req.client_id, tenant_id),
        kubectl=kubectl_commands(req.namespace, req.service_account),
        programs=[program(r) for r in found],
        az=az_commands(req),
        links=portal_links(req, tenant_id, found),
    )


def resources(grants: list[RoleGrant]) -> list[Resource]:
    """One entry per distinct scope (ARM IDs compare case-insensitively), in grant order, with all its roles."""
    scopes: dict[str, tuple[str, list[str]]] = {}
    for grant in grants:
        scope, roles = scopes.setdefault(grant.scope.rstrip("/").lower(), (grant.scope.rstrip("/"), []))
        if grant.role_name not in roles:
            roles.append(grant.role_name)
    return [Resource(scope, tuple(roles)) for scope, roles in scopes.values()]


# ---- Kubernetes ------------------------------------------------------------------------------------------


def deployment_yaml(namespace: str, service_account: str) -> str:
    """A Deployment whose pods run as the ServiceAccount, opted in to workload identity, fit for the restricted
    Pod Security Standard (non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp)."""
    app = _label_value(service_account)
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service_account}
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {app}
  template:
    metadata:
      labels:
        app: {app}
        # Opts the pod in: the workload identity webhook mounts a token for the ServiceAccount and sets
        # AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST.
        azure.workload.identity/use: "true"
    spec:
      # Created by the portal, annotated with the identity's client ID: do not create it again.
      serviceAccountName: {service_account}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: app
          image: {PLACEHOLDER_IMAGE}  # your application's image
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              memory: 256Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
"""


def _label_value(name: str) -> str:
    """A ServiceAccount name (a DNS subdomain, up to 253) as a label value (up to 63, ending alphanumeric)."""
    return name[:63].rstrip("-.")


def service_account_yaml(namespace: str, service_account: str, client_id: str, tenant_id: str) -> str:
    # Namespace and name passed DNS-1123 validation, so they need no YAML quoting; IDs are GUIDs, quoted anyway.
    return (
        "# For reference only: the portal created this ServiceAccount and puts it back if it drifts.\n"
        "apiVersion: v1\n"
        "kind: ServiceAccount\n"
        "metadata:\n"
        f"  name: {service_account}\n"
        f"  namespace: {namespace}\n"
        "  annotations:\n"
        f'    azure.workload.identity/client-id: "{client_id}"\n'
        f'    azure.workload.identity/tenant-id: "{tenant_id}"\n'
    )


def kubectl_commands(namespace: str, service_account: str) -> str:
    sa, ns = shlex.quote(service_account), shlex.quote(namespace)
    return (
        f"kubectl get serviceaccount {sa} -n {ns} -o yaml\n"
        f"kubectl describe serviceaccount {sa} -n {ns}\n"
        "# After applying the Deployment: the pods should carry the injected AZURE_* variables.\n"
        f"kubectl get pods -n {ns} -l app={shlex.quote(_label_value(service_account))}\n"
    )


# ---- Azure CLI -------------------------------------------------------------------------------------------


def az_commands(req: IdentityRequest) -> str:
    """Show the identity, its federated credential and its role assignments (az CLI syntax as documented)."""
    identity = Resource(req.identity_resource_id, ())
    group = shlex.quote(identity.after("resourceGroups") or req.cluster.resource_group)
    subscription = shlex.quote(identity.after("subscriptions") or req.cluster.subscription_id)
    name = shlex.quote(req.identity_name)
    return (
        "# The managed identity (client ID, principal ID, tenant ID)\n"
        f"az identity show --ids {shlex.quote(req.identity_resource_id)}\n"
        "# Its federated credential: issuer, subject and audience\n"
        f"az identity federated-credential show --identity-name {name} --resource-group {group} "
        f"--name {shlex.quote(req.fic_name)} --subscription {subscription}\n"
        "# Its role assignments, in every scope of the subscription\n"
        f"az role assignment list --assignee {shlex.quote(req.principal_id)} --all "
        f"--subscription {subscription} --output table\n"
    )


# ---- programs --------------------------------------------------------------------------------------------


def _text(doc: str, imports: list[str], body: str) -> str:
    """A whole program: docstring, imports, the credential, then `body` (which uses `credential`)."""
    lines = "".join(f"{line}\n" for line in ["from azure.identity import DefaultAzureCredential", *imports])
    return (
        f'"""{doc}"""\n\n{lines}\n'
        "# In a pod of the Deployment above, DefaultAzureCredential finds the workload identity through the\n"
        "# variables the webhook sets (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE): no secret.\n"
        f"credential = DefaultAzureCredential()\n{body}"
    )


def _py(text: str) -> str:
    """`text` as a Python string literal (JSON's escapes are Python's for these)."""
    return json.dumps(text)


def program(resource: Resource) -> Program:
    """A short program that uses the identity on `resource`, chosen by the resource's type."""
    if resource.kind == "keyvault":
        return _key_vault(resource)
    if resource.kind == "storage":
        return _storage(resource)
    return _generic(resource)


def _key_vault(resource: Resource) -> Program:
    url = f"https://{resource.after('vaults').lower()}.{KEY_VAULT_SUFFIX}"
    secret = resource.after("secrets") or "my-secret"
    body = (
        f"client = SecretClient(vault_url={_py(url)}, credential=credential)\n"
        f"secret = client.get_secret({_py(secret)})  # the name of a secret in the vault\n"
        'print(f"Read {secret.name}, version {secret.properties.version}")  # never print the value\n'
    )
    doc = f"Read a secret from {resource.label} as the workload identity."
    code = _text(doc, ["from azure.keyvault.secrets import SecretClient"], body)
    return Program(resource, "azure-identity azure-keyvault-secrets", code)


def _storage(resource: Resource) -> Program:
    url = f"https://{resource.after('storageAccounts').lower()}.{BLOB_SUFFIX}"
    container = resource.after("containers")
    body = f"service = BlobServiceClient(account_url={_py(url)}, credential=credential)\n"
    if container:
        body += f"for blob in service.get_container_client({_py(container)}).list_blobs():\n    print(blob.name)\n"
    else:
        body += (
            "for container in service.list_containers():\n"
            "    for blob in service.get_container_client(container.name).list_blobs():\n"
            '        print(f"{container.name}/{blob.name}")\n'
        )
    doc = f"List the blobs of {resource.label} as the workload identity."
    code = _text(doc, ["from azure.storage.blob import BlobServiceClient"], body)
    return Program(resource, "azure-identity azure-storage-blob", code)


def _generic(resource: Resource) -> Program:
    body = (
        f"SCOPE = {_py(resource.scope)}\n"
        "# A token for Azure Resource Manager; a data-plane service takes its own (https://<service>/.default).\n"
        'token = credential.get_token("https://management.azure.com/.default")\n'
        'print("Signed in as the workload identity; the token expires at", token.expires_on)\n'
        f"# Pass `credential` to the Azure SDK client for {resource.type or 'Resource Manager'} to act on SCOPE.\n"
    )
    code = _text(f"Get a token as the workload identity, for {resource.label}.", [], body)
    return Program(resource, "azure-identity", code)


# ---- the Azure portal ------------------------------------------------------------------------------------


def portal_link(tenant_id: str, resource_id: str) -> str:
    return f"{PORTAL_URL}/#@{quote(tenant_id, safe='')}/resource{quote(resource_id, safe='/')}"


def portal_links(req: IdentityRequest, tenant_id: str, found: list[Resource]) -> list[Link]:
    links = [Link(f"Managed identity {req.identity_name}", portal_link(tenant_id, req.identity_resource_id))]
    return links + [Link(r.label, portal_link(tenant_id, r.scope)) for r in found]
