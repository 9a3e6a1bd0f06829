#!/usr/bin/env bash
# Microsoft's tutorial "Use Microsoft Entra Workload ID with AKS" (learn.microsoft.com/azure/aks/learn/
# tutorial-kubernetes-workload-identity), its commands as written, against the emulator. Run by
# tests/emulator/test_tutorial_cli.py; runnable by hand against `make run` with the same environment.
#
# Only configuration differs from the tutorial, all of it set by whoever runs this:
# - az: the emulator registered as the active cloud (`az cloud register`, `az cloud set`), REQUESTS_CA_BUNDLE
#   carrying its CA, AZURE_CORE_INSTANCE_DISCOVERY=false; an operator service principal in AZURE_CLIENT_ID,
#   AZURE_CLIENT_SECRET, AZURE_TENANT_ID.
# - kubectl: KUBECONFIG for the cluster. The tutorial's `az aks get-credentials` works here too, but gives a
#   kubeconfig that signs in through kubelogin, which this machine does not have.
# - The group, cluster and key vault exist already (the emulator's world), so their create steps are left out.
# - KEYVAULT_VAULT_NAME: what `secret set --vault-name` is given. On Azure the vault's name; here the emulator's
#   path to the vault (README: `--vault-name localhost:8443/keyvault/kv-x`): az makes the name a host by appending
#   `.vault.azure.net`, and the vault's own origin is a port on 127.0.0.1, which no name plus suffix spells.
# - The workload: where the tutorial deploys a pod that reads the secret, this does what the pod does, with az:
#   a ServiceAccount token for api://AzureADTokenExchange (the token the webhook projects into the pod), the client
#   ID from the ServiceAccount's annotation, and the secret read at KEYVAULT_URL, as the pod reads it. It prints the
#   secret's value.
set -euo pipefail

: "${RESOURCE_GROUP:?}" "${LOCATION:?}" "${CLUSTER_NAME:?}" "${SUBSCRIPTION:?}" "${KEYVAULT_RESOURCE_GROUP:?}"
: "${KEYVAULT_NAME:?}" "${KEYVAULT_SECRET_NAME:?}" "${SERVICE_ACCOUNT_NAMESPACE:?}" "${SERVICE_ACCOUNT_NAME:?}"
: "${USER_ASSIGNED_IDENTITY_NAME:?}" "${FEDERATED_IDENTITY_CREDENTIAL_NAME:?}"
KEYVAULT_VAULT_NAME="${KEYVAULT_VAULT_NAME:-${KEYVAULT_NAME}}"

az login --service-principal --username "${AZURE_CLIENT_ID}" --password "${AZURE_CLIENT_SECRET}" \
    --tenant "${AZURE_TENANT_ID}" --output none
az account set --subscription "${SUBSCRIPTION}"

# Retrieve the OIDC issuer URL
export AKS_OIDC_ISSUER="$(az aks show --name "${CLUSTER_NAME}" --resource-group "${RESOURCE_GROUP}" \
    --query "oidcIssuerProfile.issuerUrl" --output tsv)"

# Create a managed identity
az identity create --name "${USER_ASSIGNED_IDENTITY_NAME}" --resource-group "${RESOURCE_GROUP}" \
    --location "${LOCATION}" --subscription "${SUBSCRIPTION}" --output none
export USER_ASSIGNED_CLIENT_ID="$(az identity show --resource-group "${RESOURCE_GROUP}" \
    --name "${USER_ASSIGNED_IDENTITY_NAME}" --query 'clientId' --output tsv)"

# Create a Kubernetes service account
cat <<EOF | kubectl apply -f -
apiVersion: v1
kind: ServiceAccount
metadata:
  annotations:
    azure.workload.identity/client-id: "${USER_ASSIGNED_CLIENT_ID}"
  name: "${SERVICE_ACCOUNT_NAME}"
  namespace: "${SERVICE_ACCOUNT_NAMESPACE}"
EOF

# Create the federated identity credential
az identity federated-credential create --name "${FEDERATED_IDENTITY_CREDENTIAL_NAME}" \
    --identity-name "${USER_ASSIGNED_IDENTITY_NAME}" --resource-group "${RESOURCE_GROUP}" \
    --issuer "${AKS_OIDC_ISSUER}" \
    --subject system:serviceaccount:"${SERVICE_ACCOUNT_NAMESPACE}":"${SERVICE_ACCOUNT_NAME}" \
    --audience api://AzureADTokenExchange --output none

# Create a key vault secret (the vault exists: its id and URI, then the caller may write secrets)
export KEYVAULT_RESOURCE_ID="$(az keyvault show --resource-group "${KEYVAULT_RESOURCE_GROUP}" \
    --name "${KEYVAULT_NAME}" --query id --output tsv)"
export CALLER_OBJECT_ID="$(az ad sp show --id "${AZURE_CLIENT_ID}" --query id --output tsv)"
az role assignment create --assignee "${CALLER_OBJECT_ID}" --role "Key Vault Secrets Officer" \
    --scope "${KEYVAULT_RESOURCE_ID}" --output none
az keyvault secret set --vault-name "${KEYVAULT_VAULT_NAME}" --name "${KEYVAULT_SECRET_NAME}" \
    --value "Hello\!" --output none

# Grant the managed identity permission to read the secret
export IDENTITY_PRINCIPAL_ID="$(az identity show --name "${USER_ASSIGNED_IDENTITY_NAME}" \
    --resource-group "${RESOURCE_GROUP}" --query principalId --output tsv)"
az role assignment create --assignee-object-id "${IDENTITY_PRINCIPAL_ID}" --role "Key Vault Secrets User" \
    --scope "${KEYVAULT_RESOURCE_ID}" --assignee-principal-type ServicePrincipal --output none
export KEYVAULT_URL="$(az keyvault show --resource-group "${KEYVAULT_RESOURCE_GROUP}" \
    --name "${KEYVAULT_NAME}" --query properties.vaultUri --output tsv)"

# The workload, as the pod: its projected token, the client ID the webhook takes from the ServiceAccount
TOKEN="$(kubectl create token "${SERVICE_ACCOUNT_NAME}" --namespace "${SERVICE_ACCOUNT_NAMESPACE}" \
    --audience api://AzureADTokenExchange)"
POD_CLIENT_ID="$(kubectl get serviceaccount "${SERVICE_ACCOUNT_NAME}" --namespace "${SERVICE_ACCOUNT_NAMESPACE}" \
    --output jsonpath='{.metadata.annotations.azure\.workload\.identity/client-id}')"
az logout
az login --federated-token "${TOKEN}" --service-principal -u "${POD_CLIENT_ID}" -t "${AZURE_TENANT_ID}" \
    --allow-no-subscriptions --output none
az keyvault secret show --id "${KEYVAULT_URL}secrets/${KEYVAULT_SECRET_NAME}" --query value --output tsv
