"""schemathesis against the schema the portal serves, with real tokens from the emulator for each kind of caller:
no 5xx, every answer as the schema says (status, content type, body), unsupported methods 405, calls without a
token refused. Bounded: a few examples per operation and caller."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ..requests_app.factories import submitted
from .conftest import Api
from .test_rules import ready

# A valid body may still be refused by the portal's rules (not your namespace, not your request, already decided):
# the check that every schema-valid call succeeds does not apply to an API with authorization.
EXCLUDED = [positive_data_acceptance]


# Only the cluster's DevOps members and admins see an identity's IDs (access.can_see_ids), whatever is called.
SEE_IDS = {"devops", "admin"}
ID_FIELDS = ("client_id", "principal_id", "identity_resource_id")


def shows_ids(response) -> bool:
    if response.status_code >= 300:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    rows = body.get("results", [body.get("request", body)]) if isinstance(body, dict) else []
    return any(isinstance(row, dict) and any(row.get(f) for f in ID_FIELDS) for row in rows)


@pytest.fixture
def served_schema(transactional_db, live_server, cloud, offline_cluster, requester):
    """The schema as the running portal serves it (a live server: real HTTP, as a client sees it)."""
    # Something to list, and a ready identity whose IDs only DevOps members and admins may see.
    submitted(offline_cluster, requester)
    ready(submitted(offline_cluster, requester, sa="ready-api"))
    return schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")


@pytest.fixture
def callers(token_of, pipeline_token, requester, approver, devops, admin) -> dict[str, str]:
    people = {"requester": requester, "approver": approver, "devops": devops, "admin": admin}
    return {name: token_of(user.object_id) for name, user in people.items()} | {"pipeline": pipeline_token}


def test_the_api_keeps_to_its_schema(served_schema, callers, live_server):
    operations = [result.ok() for result in served_schema.get_all_operations()]
    assert len(operations) >= 13

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def keeps_to_it(case):
            for name, token in callers.items():
                response = case.call(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"})
                case.validate_response(response, excluded_checks=EXCLUDED)
                if name not in SEE_IDS:
                    assert not shows_ids(response), f"{name} was shown IDs by {case.method} {case.path}"

        keeps_to_it()


def test_the_schema_is_served_with_its_security_scheme(cloud, db):
    response = Api("").client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    document = response.json()
    assert document["components"]["securitySchemes"]["entraBearer"]["scheme"] == "bearer"
    assert all(
        op.get("security") == [{"entraBearer": []}]
        for path, ops in document["paths"].items()
        if path != "/api/v1/schema/"
        for op in ops.values()
    )
