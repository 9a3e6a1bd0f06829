"""Migration 0009: requests made before it keep the names their Azure resources have; shared names stop it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from requests_app import naming
from requests_app.models import IdentityRequest
from tests.requests_app.migrating import migrate, migrate_to_the_latest

BEFORE = ("requests_app", "0008_audit_checkpoints_truncate_trigger")
AFTER = ("requests_app", "0009_names_stored_fic_name_unique_identity_name")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def before_0009() -> Iterator[Any]:
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate_to_the_latest()


def old_request(apps: Any, namespace: str, service_account: str, status: str = "ready") -> Any:
    User, Cluster = apps.get_model("requests_app", "User"), apps.get_model("requests_app", "Cluster")
    IdentityRequestThen = apps.get_model("requests_app", "IdentityRequest")
    user, _ = User.objects.get_or_create(username="riley")
    cluster, _ = Cluster.objects.get_or_create(
        name="aks-demo",
        defaults={
            "subscription_id": "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b",
            "resource_group": "rg-aks-demo-identities",
            "location": "westeurope",
            "oidc_issuer_url": "https://localhost:1/oidc/x/",
            "api_server_url": "https://localhost:1/k8s/aks-demo",
            "devops_group_id": "0f1e2d3c-0003-4000-8000-000000000003",
        },
    )
    return IdentityRequestThen.objects.create(
        cluster=cluster,
        namespace=namespace,
        service_account=service_account,
        purpose="x",
        identity_name=naming.legacy_identity_name("aks-demo", namespace, service_account),
        requester=user,
        status=status,
    )


def test_requests_made_before_keep_the_credential_name_they_were_given(before_0009) -> None:
    dotted = old_request(before_0009, "team-payments", "payments.api")
    plain = old_request(before_0009, "team-payments", "worker", status="revoked")
    migrate(AFTER)
    names = dict(IdentityRequest.objects.values_list("pk", "fic_name"))
    assert names == {
        dotted.pk: "aks-demo-team-payments-payments-api-8f246b6d",
        plain.pk: "aks-demo-team-payments-worker",
    }
    assert names[dotted.pk] == naming.legacy_fic_name("aks-demo", "team-payments", "payments.api")
    # values_list: the columns 0009 knows (the model may have fields of later migrations).
    identity_name = IdentityRequest.objects.values_list("identity_name", flat=True).get(pk=dotted.pk)
    assert identity_name == "aks-demo-team-payments-payments-api-8f246b6d"


def test_active_requests_sharing_an_identity_name_stop_the_migration_and_are_named(before_0009) -> None:
    # Issue 9's pair: both were aks-demo-team-payments-api; only a form check kept them apart, and not always.
    first = old_request(before_0009, "team", "payments-api")
    second = old_request(before_0009, "team-payments", "api", status="submitted")
    with pytest.raises(RuntimeError, match="aks-demo-team-payments-api: requests") as stopped:
        migrate(AFTER)
    assert str(first.pk) in str(stopped.value) and str(second.pk) in str(stopped.value)
    # Once one of them is finished, the migration goes through.
    before_0009.get_model("requests_app", "IdentityRequest").objects.filter(pk=second.pk).update(status="cancelled")
    migrate(AFTER)
    assert IdentityRequest.objects.values_list("fic_name", flat=True).get(pk=first.pk) == "aks-demo-team-payments-api"
