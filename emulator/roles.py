"""Azure built-in role definitions the emulator knows, with their real GUIDs and permissions.

Built-in role GUIDs are the same in every tenant, so portals hard-code them; the permissions below are copied
from Microsoft's published built-in role JSON (learn.microsoft.com "Azure built-in roles"), so data-plane
checks (Key Vault's getSecret) grant exactly what Azure grants. `action_allowed` does Azure's wildcard
matching of actions against a role's permissions.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

AUTHZ = "/providers/Microsoft.Authorization/roleDefinitions/"
# Role definitions carry creation times; these are fixed (the real ones are years old).
CREATED_ON = "2015-02-02T21:55:09.8806423Z"
UPDATED_ON = "2024-01-12T16:49:52.1750000Z"

_KV_MGMT_READ = [
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
]
_KV_ONLY_RBAC = " Only works for key vaults that use the 'Azure role-based access control' permission model."
_SB_READ = [
    "Microsoft.ServiceBus/*/queues/read",
    "Microsoft.ServiceBus/*/topics/read",
    "Microsoft.ServiceBus/*/topics/subscriptions/read",
]


@dataclass(frozen=True)
class Role:
    guid: str
    name: str
    description: str
    actions: list[str] = field(default_factory=list)
    not_actions: list[str] = field(default_factory=list)
    data_actions: list[str] = field(default_factory=list)
    not_data_actions: list[str] = field(default_factory=list)

    def as_arm(self, scope_prefix: str = "") -> dict[str, Any]:
        """The ARM RoleDefinition JSON; `scope_prefix` is "/subscriptions/{sub}" when listed under one."""
        return {
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [
                    {
                        "actions": list(self.actions),
                        "notActions": list(self.not_actions),
                        "dataActions": list(self.data_actions),
                        "notDataActions": list(self.not_data_actions),
                    }
                ],
                "createdOn": CREATED_ON,
                "updatedOn": UPDATED_ON,
                "createdBy": None,
                "updatedBy": None,
            },
            "id": f"{scope_prefix}{AUTHZ}{self.guid}",
            "type": "Microsoft.Authorization/roleDefinitions",
            "name": self.guid,
        }


BUILT_IN: list[Role] = [
    Role(
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Owner",
        "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions=["*"],
    ),
    Role(
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Contributor",
        "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, "
        "manage assignments in Azure Blueprints, or share image galleries.",
        actions=["*"],
        not_actions=[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
        ],
    ),
    Role(
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "Reader",
        "View all resources, but does not allow you to make any changes.",
        actions=["*/read"],
    ),
    Role(
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
        "Lets you manage user access to Azure resources.",
        actions=["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
    ),
    Role(
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        "Role Based Access Control Administrator",
        "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to "
        "manage access using other ways, such as Azure Policy.",
        actions=[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
    ),
    Role(
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Key Vault Administrator",
        "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, "
        "and secrets. Cannot manage key vault resources or manage role assignments." + _KV_ONLY_RBAC,
        actions=_KV_MGMT_READ,
        data_actions=["Microsoft.KeyVault/vaults/*"],
    ),
    Role(
        "4633458b-17de-408a-b874-0445c86b69e6",
        "Key Vault Secrets User",
        "Read secret contents." + _KV_ONLY_RBAC,
        data_actions=[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    ),
    Role(
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "Key Vault Secrets Officer",
        "Perform any action on the secrets of a key vault, except manage permissions." + _KV_ONLY_RBAC,
        actions=_KV_MGMT_READ,
        data_actions=["Microsoft.KeyVault/vaults/secrets/*"],
    ),
    Role(
        "12338af0-0e69-4776-bea7-57ae8d297424",
        "Key Vault Crypto User",
        "Perform cryptographic operations using keys." + _KV_ONLY_RBAC,
        data_actions=[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
    ),
    Role(
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        "Key Vault Crypto Officer",
        "Perform any action on the keys of a key vault, except manage permissions." + _KV_ONLY_RBAC,
        actions=_KV_MGMT_READ,
        data_actions=["Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"],
    ),
    Role(
        "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        "Key Vault Certificate User",
        "Read certificate contents." + _KV_ONLY_RBAC,
        data_actions=[
            "Microsoft.KeyVault/vaults/certificates/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ],
    ),
    Role(
        "21090545-7ca7-4776-b22c-e363652d74d2",
        "Key Vault Reader",
        "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such "
        "as secret contents or key material." + _KV_ONLY_RBAC,
        actions=_KV_MGMT_READ,
        data_actions=["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
    ),
    Role(
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "Storage Blob Data Reader",
        "Allows for read access to Azure Storage blob containers and data",
        actions=[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        data_actions=["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
    ),
    Role(
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "Storage Blob Data Contributor",
        "Allows for read, write and delete access to Azure Storage blob containers and data",
        actions=[
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        data_actions=[
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        ],
    ),
    Role(
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "Storage Blob Data Owner",
        "Allows for full access to Azure Storage blob containers and data, including assigning POSIX access control.",
        actions=[
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        data_actions=["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
    ),
    Role(
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "Storage Queue Data Contributor",
        "Allows for read, write, and delete access to Azure Storage queues and queue messages",
        actions=[
            "Microsoft.Storage/storageAccounts/queueServices/queues/delete",
            "Microsoft.Storage/storageAccounts/queueServices/queues/read",
            "Microsoft.Storage/storageAccounts/queueServices/queues/write",
        ],
        data_actions=[
            "Microsoft.Storage/storageAccounts/queueServices/queues/messages/delete",
            "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read",
            "Microsoft.Storage/storageAccounts/queueServices/queues/messages/write",
            "Microsoft.Storage/storageAccounts/queueServices/queues/messages/process/action",
        ],
    ),
    Role(
        "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
        "Azure Service Bus Data Receiver",
        "Allows for receive access to Azure Service Bus resources.",
        actions=_SB_READ,
        data_actions=["Microsoft.ServiceBus/*/receive/action"],
    ),
    Role(
        "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
        "Azure Service Bus Data Sender",
        "Allows for send access to Azure Service Bus resources.",
        actions=_SB_READ,
        data_actions=["Microsoft.ServiceBus/*/send/action"],
    ),
    Role(
        "090c5cfd-751d-490a-894a-3ce6f1109419",
        "Azure Service Bus Data Owner",
        "Allows for full access to Azure Service Bus resources.",
        actions=["Microsoft.ServiceBus/*"],
        data_actions=["Microsoft.ServiceBus/*"],
    ),
    Role(
        "f1a07417-d97a-45cb-824c-7a7467783830",
        "Managed Identity Operator",
        "Read and Assign User Assigned Identity",
        actions=[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
    ),
    Role(
        "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        "Managed Identity Contributor",
        "Create, Read, Update, and Delete User Assigned Identity",
        actions=[
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
    ),
]

BY_GUID: dict[str, Role] = {r.guid: r for r in BUILT_IN}


def by_guid(guid: str) -> Role | None:
    return BY_GUID.get(guid.lower())


def by_name(name: str) -> Role | None:
    # Azure compares role names case-insensitively in `roleName eq '…'`.
    return next((r for r in BUILT_IN if r.name.lower() == name.lower()), None)


def guid_of_definition_id(definition_id: str) -> str:
    """`/subscriptions/…/providers/Microsoft.Authorization/roleDefinitions/{guid}` (or bare guid) -> guid."""
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _matches(pattern: str, action: str) -> bool:
    # Azure's wildcard: `*` spans any characters, including "/"; comparison is case-insensitive.
    return fnmatch.fnmatchcase(action.lower(), pattern.lower().replace("[", "[[]"))


def data_action_allowed(role: Role, action: str) -> bool:
    """Whether the role's dataActions grant `action` (notDataActions subtract)."""
    return any(_matches(p, action) for p in role.data_actions) and not any(
        _matches(p, action) for p in role.not_data_actions
    )


def action_allowed(role: Role, action: str) -> bool:
    """Whether the role's (control-plane) actions grant `action` (notActions subtract)."""
    return any(_matches(p, action) for p in role.actions) and not any(_matches(p, action) for p in role.not_actions)
