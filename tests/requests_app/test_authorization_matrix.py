"""Who gets what, on every URL and method of the portal, for every kind of person, on requests in every state.

The URL list is read from Django's resolver: a URL added to the portal without a row here fails
`test_every_url_has_a_matrix_entry`. The Django admin and django-rq's dashboard are only checked at their entry
pages (their own views do the rest), which must be staff-only.

How to read a table: rows are request states (`*`: every state), columns are people:
    anon      not signed in
    owner     the requester of the request
    other     another requester (no relation to the request or its cluster)
    approver  a portal approver
    devops    a member of the request's cluster's DevOps group
    devops2   a DevOps member of ANOTHER cluster
    admin     a portal admin
A cell is the expected HTTP status; `*` after it means the action took effect (an audit event was written),
no `*` means nothing changed (status and audit trail as before). An anonymous 302 must go to the sign-in page.

Every response (body, headers, the page that shows the flash message after a POST, error pages) is searched for
the request's client and principal IDs: only the cluster's DevOps members and admins may see them, and only on
a ready request's page.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from requests_app import audit, naming, workflow
from requests_app.models import AuditEvent, Cluster, IdentityRequest, RoleGrant, Status, Step, User

from ..portal_fixtures import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE, in_entra

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

# Fake Azure IDs, stored on every request whatever its state (a failed request can hold them too).
CLIENT_ID = "c11e47c1-d000-4000-8000-00000000c1d0"
PRINCIPAL_ID = "9a1c1a1e-0000-4000-8000-00000000b1d0"
SECRET_IDS = (CLIENT_ID, PRINCIPAL_ID)
OTHER_DEVOPS = "0f1e2d3c-0009-4000-8000-000000000009"
ROLES = ["anon", "owner", "other", "approver", "devops", "devops2", "admin"]
STATES = [
    "submitted",
    "approved",
    "provisioning",
    "ready",
    "failed",
    "failed_revoke",
    "rejected",
    "cancelled",
    "revoking",
    "revoked",
]

# ---- the tables -----------------------------------------------------------------------------------------------

# A method the URL does not serve: 405 for everyone, before the sign-in check (tests/portal/test_methods.py checks
# every method on every URL; here the GET and POST rows).
NOT_SERVED = "*  405 405 405 405 405 405 405"

# Pages that are not about one request (there are requests of every state in the database). Columns:
#                    state  anon owner other approver devops devops2 admin
PAGES = {
    ("", "GET"): "*  302 200 200 200 200 200 200",
    ("", "POST"): NOT_SERVED,
    ("requests/", "GET"): "*  302 200 200 200 200 200 200",
    ("requests/", "POST"): NOT_SERVED,
    ("requests/new/", "GET"): "*  302 200 200 200 200 200 200",
    ("requests/new/", "POST"): "*  302 200 200 200 200 200 200",  # an empty form comes back with errors
    ("requests/new/scopes/", "GET"): "*  302 404 404 404 404 404 404",  # no cluster and role: no such role
    ("requests/new/scopes/", "POST"): NOT_SERVED,
    ("approvals/", "GET"): "*  302 403 403 200 403 403 200",
    ("approvals/", "POST"): NOT_SERVED,
    ("audit/", "GET"): "*  302 403 403 403 403 403 200",
    ("audit/", "POST"): NOT_SERVED,
    ("audit.csv", "GET"): "*  302 403 403 403 403 403 200",
    ("audit.csv", "POST"): NOT_SERVED,
    # issue 13 exports: admins only (tests/requests_app/test_exports.py asks for and downloads real ones)
    ("audit/exports/", "GET"): "*  302 403 403 403 403 403 200",
    ("audit/exports/", "POST"): "*  302 403 403 403 403 403 200",  # no format chosen: the page says so
    ("audit/exports/<int:pk>/download/", "GET"): "*  302 403 403 403 403 403 404",  # no such export
    ("audit/exports/<int:pk>/download/", "POST"): NOT_SERVED,
    ("audit/exports/status/", "GET"): "*  302 403 403 403 403 403 200",  # issue 13 exports ops: the live table
    ("audit/exports/status/", "POST"): NOT_SERVED,
    # DevOps members of any cluster (each sees only their clusters' ready identities) and admins.
    ("identities/", "GET"): "*  302 403 403 403 200 200 200",
    ("identities/", "POST"): NOT_SERVED,
    # issue 11 lifecycle: what expires soon (each sees their own), the recertification report (admins).
    ("identities/expiring/", "GET"): "*  302 200 200 200 200 200 200",
    ("identities/expiring/", "POST"): NOT_SERVED,
    ("identities/recertification.csv", "GET"): "*  302 403 403 403 403 403 200",
    ("identities/recertification.csv", "POST"): NOT_SERVED,
    # issue 12 health: probes are for everyone (they say nothing about anyone); /metrics is for the bearer of
    # PORTAL_METRICS_TOKEN only (unset here: 404), never for a session, an admin's included.
    ("healthz", "GET"): "*  200 200 200 200 200 200 200",
    ("healthz", "POST"): NOT_SERVED,
    ("readyz", "GET"): "*  200 200 200 200 200 200 200",
    ("readyz", "POST"): NOT_SERVED,
    ("metrics", "GET"): "*  404 404 404 404 404 404 404",
    ("metrics", "POST"): NOT_SERVED,
    ("drift/", "GET"): "*  302 403 403 403 403 403 200",
    ("drift/", "POST"): "*  302 403 403 403 403 403 302*",  # "run reconcile now"
    # issue 11 re-federation (on aks-demo, which reports no new issuer: the start sends admins back to the page).
    ("clusters/<slug:name>/refederate/", "GET"): "*  302 403 403 403 200 403 200",
    ("clusters/<slug:name>/refederate/", "POST"): NOT_SERVED,
    ("clusters/<slug:name>/refederate/start/", "GET"): "*  302 403 403 403 403 403 302",
    ("clusters/<slug:name>/refederate/start/", "POST"): "*  302 403 403 403 403 403 302",
    # issue 11 podid: the cluster's pod identities, for its DevOps members and admins (the offline cluster's API
    # server does not answer: the page says so); adopting needs the namespace's team or an admin.
    ("clusters/<slug:name>/pod-identity/", "GET"): "*  302 403 403 403 200 403 200",
    ("clusters/<slug:name>/pod-identity/", "POST"): NOT_SERVED,
    # Without a namespace (the page's links carry one) nobody may adopt: a 403 with the reason, for admins too.
    ("clusters/<slug:name>/pod-identity/adopt/", "GET"): "*  302 403 403 403 403 403 403",
    ("clusters/<slug:name>/pod-identity/adopt/", "POST"): "*  302 403 403 403 403 403 403",
    ("login/", "GET"): "*  200 200 200 200 200 200 200",
    ("login/", "POST"): "*  302 302 302 302 302 302 302",  # off to Entra's authorize endpoint
    ("auth/callback", "GET"): "*  400 400 400 400 400 400 400",  # no sign-in was started here
    ("auth/callback", "POST"): NOT_SERVED,
    ("logout/", "GET"): "*  200 200 200 200 200 200 200",
    ("logout/", "POST"): "*  302 302* 302* 302* 302* 302* 302*",  # audited sign-out, off to Entra's logout
    # Staff only (portal admins are staff); anyone else is sent to the admin's sign-in page.
    ("admin/", "GET"): "*  302 302 302 302 302 302 200",
    ("django-rq/", "GET"): "*  302 302 302 302 302 302 200",
    ("django-rq/", "POST"): "*  302 302 302 302 302 302 200",
    ("django-rq/stats.json", "GET"): "*  401 401 401 401 401 401 200",
    ("django-rq/stats.json/t0k3n/", "GET"): "*  401 401 401 401 401 401 200",
}

# Pages and actions on one request. Columns:
#          state  anon owner other approver devops devops2 admin
DETAIL = "*  302 200 404 200 200 404 200"
DECIDE_GET = "*  302 403 403 200 403 403 200"
OBJECT = {
    ("requests/<uuid:pk>/", "GET"): DETAIL,
    ("requests/<uuid:pk>/", "POST"): NOT_SERVED,
    ("requests/<uuid:pk>/status/", "GET"): DETAIL,
    ("requests/<uuid:pk>/status/", "POST"): NOT_SERVED,
    ("approvals/<uuid:pk>/", "GET"): DECIDE_GET,
    ("approvals/<uuid:pk>/", "POST"): """
        submitted   302 403 403 302* 403 403 302*
        *           302 403 403 302  403 403 302
    """,
    # GET (or a POST without confirm=yes): the confirmation page for who may, the refusal on the request page else.
    ("requests/<uuid:pk>/cancel/", "GET"): """
        submitted   302 200 404 302 302 404 302
        *           302 302 404 302 302 404 302
    """,
    ("requests/<uuid:pk>/cancel/", "POST"): """
        submitted   302 302* 404 302 302 404 302
        *           302 302  404 302 302 404 302
    """,
    ("requests/<uuid:pk>/retry/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/retry/", "POST"): """
        failed          302 302* 404 302 302  404 302*
        failed_revoke   302 302  404 302 302* 404 302*
        *               302 302  404 302 302  404 302
    """,
    ("requests/<uuid:pk>/revoke/", "GET"): """
        ready       302 302 404 302 200 404 200
        *           302 302 404 302 302 404 302
    """,
    ("requests/<uuid:pk>/revoke/", "POST"): """
        ready       302 302 404 302 302* 404 302*
        *           302 302 404 302 302  404 302
    """,
    ("requests/<uuid:pk>/verify/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/verify/", "POST"): """
        ready       302 302* 404 302 302* 404 302*
        *           302 302  404 302 302  404 302
    """,
    # issue 11 lifecycle: owners (the requester; the rows here have no owning group) and admins.
    ("requests/<uuid:pk>/recertify/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/recertify/", "POST"): """
        ready       302 302* 404 302 302 404 302*
        *           302 302  404 302 302 404 302
    """,
    # Only a suspended identity resumes (none of these states): refused on the request page.
    ("requests/<uuid:pk>/resume/", "GET"): "*  302 302 404 302 302 404 302",
    ("requests/<uuid:pk>/resume/", "POST"): "*  302 302 404 302 302 404 302",
    ("requests/<uuid:pk>/transfer/", "GET"): """
        rejected    302 302 404 302 302 404 302
        cancelled   302 302 404 302 302 404 302
        revoked     302 302 404 302 302 404 302
        *           302 200 404 302 302 404 200
    """,
    ("requests/<uuid:pk>/transfer/", "POST"): """
        rejected    302 302  404 302 302 404 302
        cancelled   302 302  404 302 302 404 302
        revoked     302 302  404 302 302 404 302
        *           302 302* 404 302 302 404 302*
    """,
    # issue 11 re-federation: retrying a stopped one is for admins (none of these requests has one: refused with
    # a message, nothing changes); who may not see the request gets a 404, as for any request.
    ("requests/<uuid:pk>/refederate/retry/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/refederate/retry/", "POST"): "*  302 403 404 403 403 404 302",
    ("requests/<uuid:pk>/repair/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/repair/", "POST"): """
        ready       302 403 404 403 302* 404 302*
        *           302 403 404 403 302  404 302
    """,
}

# What each POST sends: enough for the action to go through when it is allowed.
POST_DATA = {
    "approvals/<uuid:pk>/": {"decision": "approve", "comment": "fine"},
    "requests/<uuid:pk>/cancel/": {"confirm": "yes"},
    "requests/<uuid:pk>/revoke/": {"reason": "CHG-42: moved to another cluster", "confirm": "yes"},
    "requests/<uuid:pk>/recertify/": {"reason": "Still needed: quarterly review"},
    "requests/<uuid:pk>/resume/": {"confirm": "yes"},
    "requests/<uuid:pk>/transfer/": {"group_id": "0f1e2d3c-0005-4000-8000-000000000005", "confirm": "yes"},
}

# Admin internals and the django-rq dashboard's inner pages: their own views, checked at the entry pages above.
EXCLUDED_PREFIXES = ("admin/",)
DJANGO_RQ_ENTRY = {"django-rq/", "django-rq/^stats.json/?$", "django-rq/^stats.json/(?P<token>[\\w]+)?/?$"}
# Routes written as regexes are matched by these concrete paths in the tables.
REGEX_ROUTES = {
    "django-rq/^stats.json/?$": "django-rq/stats.json",
    "django-rq/^stats.json/(?P<token>[\\w]+)?/?$": "django-rq/stats.json/t0k3n/",
}


@dataclass(frozen=True)
class Cell:
    status: int
    effect: bool


def parse(table: str, states: list[str] | None = None) -> dict[tuple[str, str], Cell]:
    """(state, role) -> Cell; a `*` row fills the states no earlier row named (of `states`: request states)."""
    cells: dict[tuple[str, str], Cell] = {}
    for line in table.strip().splitlines():
        state, *values = line.split()
        assert len(values) == len(ROLES), f"row {line!r} needs one cell per role"
        for st in (states or STATES) if state == "*" else [state]:
            for role, value in zip(ROLES, values, strict=True):
                cells.setdefault((st, role), Cell(int(value.rstrip("*")), value.endswith("*")))
    return cells


# ---- the people, clusters and requests -------------------------------------------------------------------------


@pytest.fixture
def other_cluster(db) -> Cluster:
    """A second cluster with its own DevOps group: its members must not reach the first cluster's requests."""
    return Cluster.objects.create(
        name="aks-other",
        subscription_id=SUBSCRIPTION,
        resource_group="rg-aks-other-identities",
        location="westeurope",
        oidc_issuer_url="https://localhost:1/oidc/other/",
        api_server_url="https://localhost:1/k8s/aks-other",
        devops_group_id=OTHER_DEVOPS,
        allowed_namespaces=["team-payments"],
    )


@pytest.fixture
def people(requester, outsider, approver, devops, admin, other_cluster, control) -> dict[str, User | None]:
    devops2 = User.objects.create(
        username="devops-two", object_id="77777777-7777-4777-8777-777777777777", display_name="Devon Elsewhere",
        tenant_id=requester.tenant_id, entra_groups=[OTHER_DEVOPS], roles_checked_at=timezone.now(),
    )  # fmt: skip
    in_entra(control, devops2)
    return {
        "anon": None,
        "owner": requester,
        "other": outsider,
        "approver": approver,
        "devops": devops,
        "devops2": devops2,
        "admin": admin,
    }


_serial = itertools.count()


def make_request(cluster: Cluster, owner: User, state: str) -> IdentityRequest:
    """A request in `state`, written straight to the database with fake IDs (no cloud involved)."""
    sa = f"sa-{next(_serial)}"
    status = Status.FAILED if state == "failed_revoke" else Status(state)
    failed_step = {"failed": "roles", "failed_revoke": "revoke_roles"}.get(state, "")
    now = timezone.now()
    req = IdentityRequest.objects.create(
        cluster=cluster,
        namespace="team-payments",
        service_account=sa,
        purpose="Read the payment provider's API key",
        identity_name=naming.identity_name(cluster.name, "team-payments", sa),
        requester=owner,
        status=status,
        identity_resource_id=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{sa}",
        client_id=CLIENT_ID,
        principal_id=PRINCIPAL_ID,
        tenant_id=owner.tenant_id,
        failed_step=failed_step,
        # Cloud errors quote principals; people who may not see IDs get them redacted.
        failure_message=f"PrincipalNotFound: principal {PRINCIPAL_ID} (client {CLIENT_ID}) does not exist"
        if failed_step
        else "",
        ready_at=now if status == Status.READY else None,
    )
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    RoleGrant.objects.create(
        request=req, role_name=role.role_name, role_definition_id=role.role_definition_id, scope=VAULT_SCOPE
    )
    if status not in (Status.SUBMITTED, Status.REJECTED, Status.CANCELLED):
        for position, name in enumerate(workflow.PROVISIONING_STEPS):
            failed = name == failed_step
            Step.objects.create(
                request=req,
                name=name,
                position=position,
                state=Step.State.FAILED if failed else Step.State.SUCCEEDED,
                attempts=1,
                started_at=now,
                error=f"principal {PRINCIPAL_ID} not found" if failed else "",
            )
    # Provisioning's audit details carry IDs under these keys; the audit pages must strip them.
    audit.record("step.identity.succeeded", actor=None, request=req, details={"clientId": CLIENT_ID,
                                                                             "principal_id": PRINCIPAL_ID})  # fmt: skip
    return req


def client_as(user: User | None) -> Client:
    c = Client(HTTP_HOST="localhost:8000")
    if user is not None:
        c.force_login(user)
    return c


def body_of(resp) -> str:
    content = b"".join(resp.streaming_content) if resp.streaming else resp.content
    headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    return headers + "\n" + content.decode(errors="replace")


def leaked(text: str) -> list[str]:
    return [i for i in SECRET_IDS if i.lower() in text.lower()]


# ---- every URL has a row --------------------------------------------------------------------------------------


def all_routes() -> list[str]:
    def walk(patterns, prefix: str) -> list[str]:
        out: list[str] = []
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                if route.startswith(EXCLUDED_PREFIXES):
                    out.append(route)  # the admin's index only
                    continue
                out += walk(p.url_patterns, route)
            elif isinstance(p, URLPattern):
                out.append(route)
        return out

    return walk(get_resolver().url_patterns, "")


def matrix_route(route: str) -> str | None:
    """The table key a resolver route is checked under; None for django-rq's inner pages (staff-only views)."""
    if route.startswith("django-rq/") and route not in DJANGO_RQ_ENTRY:
        return None
    if route.startswith("api/v1/"):
        # issue 12 api: the REST API takes bearer tokens, never the session this matrix signs in with; who may
        # do what there is tested per rule in tests/api (tests/api/test_rules.py, test_tokens.py).
        return None
    return REGEX_ROUTES.get(route, route)


def test_every_url_has_a_matrix_entry():
    tables = {route for route, _ in (*PAGES, *OBJECT, *CHANGES, *MOVES)}
    missing = [r for r in all_routes() if (key := matrix_route(r)) is not None and key not in tables]
    assert missing == [], f"URLs without a row in the authorization matrix: {missing}"
    for route in tables:
        methods = {m for r, m in (*PAGES, *OBJECT, *CHANGES, *MOVES) if r == route}
        assert "GET" in methods, f"{route}: no GET row"


def test_django_rq_inner_pages_are_staff_only(people):
    """Every django-rq view under the dashboard is wrapped in staff_member_required (checked on a sample)."""
    for path in ("/django-rq/queues/0/", "/django-rq/queues/0/failed/", "/django-rq/workers/0/",
                 "/django-rq/queues/0/empty/", "/django-rq/queues/actions/0/"):  # fmt: skip
        for role in ("anon", "owner", "approver", "devops"):
            for method in ("get", "post"):
                resp = getattr(client_as(people[role]), method)(path)
                assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/"), (path, role)


# ---- the matrix -----------------------------------------------------------------------------------------------


def check_cell(
    label: str, c: Client, method: str, url: str, data: dict, want: Cell, role: str, changed: Callable[[], bool]
) -> list[str]:
    resp = getattr(c, method.lower())(url, data) if method == "POST" else c.get(url)
    problems = []
    if resp.status_code != want.status:
        problems.append(f"{label}: {resp.status_code}, want {want.status}")
    if role == "anon" and resp.status_code == 302 and url not in ("/login/", "/logout/"):
        loc = resp["Location"]
        if not (loc.startswith("/login/") or loc.startswith("/admin/login/")):
            problems.append(f"{label}: anonymous redirected to {loc}, not to sign-in")
    if changed() != want.effect:
        problems.append(f"{label}: {'took effect' if not want.effect else 'did not take effect'}")
    text = body_of(resp)
    if method == "POST" and role != "anon" and resp.status_code == 302:
        text += body_of(c.get("/requests/"))  # the flash message is shown on the next page
    return problems + [f"{label}: shows {i}" for i in leaked(text)]


@pytest.mark.parametrize(("route", "method"), list(PAGES), ids=[f"{m} /{r}" for r, m in PAGES])
def test_pages(route, method, people, offline_cluster, cloud):
    # One request of each state, so lists and the audit trail have something to (not) show.
    for state in STATES:
        make_request(offline_cluster, people["owner"], state)
    cells = parse(PAGES[(route, method)])
    problems: list[str] = []
    for role in ROLES:
        before = AuditEvent.objects.count()
        problems += check_cell(
            f"{role:8} {method} /{route}",
            client_as(people[role]),
            method,
            f"/{route}".replace("<slug:name>", offline_cluster.name).replace("<int:pk>", "999999"),
            {},
            cells[("submitted", role)],
            role,
            lambda before=before: AuditEvent.objects.count() > before,
        )
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("route", "method"), list(OBJECT), ids=[f"{m} /{r}" for r, m in OBJECT])
def test_request_urls(route, method, people, offline_cluster):
    cells = parse(OBJECT[(route, method)])
    clients = {role: client_as(people[role]) for role in ROLES}
    shows_ids = method == "GET" and route in ("requests/<uuid:pk>/", "requests/<uuid:pk>/status/")
    problems: list[str] = []
    for state in STATES:
        shared = make_request(offline_cluster, people["owner"], state)  # a GET changes nothing: one will do
        for role in ROLES:
            req = shared if method == "GET" else make_request(offline_cluster, people["owner"], state)
            before = (req.status, req.events.count())

            def changed(req=req, before=before) -> bool:
                fresh = IdentityRequest.objects.get(pk=req.pk)
                return (fresh.status, fresh.events.count()) != before

            url = "/" + route.replace("<uuid:pk>", str(req.pk))
            may_see = shows_ids and state == "ready" and role in ("devops", "admin")
            label = f"{state:13} {role:8} {method} {url}"
            found = check_cell(
                label, clients[role], method, url, POST_DATA.get(route, {}), cells[(state, role)], role, changed
            )
            if may_see:
                # Those who may see the IDs do (so the search above does find them when they are there).
                assert any(CLIENT_ID in f for f in found) or route.endswith("/status/"), label
                found = [f for f in found if not f.endswith(SECRET_IDS)]
            problems += found
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("route", "method"), list(OBJECT), ids=[f"{m} /{r}" for r, m in OBJECT])
def test_a_request_you_may_not_see_answers_like_one_that_does_not_exist(route, method, people, offline_cluster):
    """IDOR: the IDs are random UUIDs, and access is checked anyway. For people the request is none of their
    business, an existing request and a random UUID get the same answer (so existence leaks neither)."""
    for role in ("other", "devops2"):
        c = client_as(people[role])
        req = make_request(offline_cluster, people["owner"], "ready")
        assert req.pk.version == 4
        data = POST_DATA.get(route, {})
        call = c.post if method == "POST" else c.get
        real = call("/" + route.replace("<uuid:pk>", str(req.pk)), data)
        fake = call("/" + route.replace("<uuid:pk>", str(uuid.uuid4())), data)
        assert real.status_code == fake.status_code, (role, route, method)
        assert real.status_code in (403, 404, 405), (role, route, method)
        assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY
        assert not leaked(body_of(real))


# ---- issue 11: a change to a ready identity ---------------------------------------------------------------------

# Rows: the change's state; the identity is ready, its requester (`owner`) asked for the change. Columns as above.
CHANGES = {
    ("requests/<uuid:pk>/changes/new/", "GET"): "*  302 200 404 302 302 404 200",
    ("requests/<uuid:pk>/changes/new/", "POST"): "*  302 302* 404 302 302 404 302*",
    ("requests/<uuid:pk>/changes/<int:change_pk>/", "GET"): "*  302 200 404 200 200 404 200",
    ("requests/<uuid:pk>/changes/<int:change_pk>/", "POST"): NOT_SERVED,
    # Deciding: approvers and admins (never the asker), as for a request's decision page.
    ("requests/<uuid:pk>/changes/<int:change_pk>/decide/", "GET"): DECIDE_GET,
    ("requests/<uuid:pk>/changes/<int:change_pk>/decide/", "POST"): """
        submitted   302 403 403 302* 403 403 302*
        *           302 403 403 302  403 403 302
    """,
    ("requests/<uuid:pk>/changes/<int:change_pk>/cancel/", "GET"): """
        submitted   302 200 404 302 302 404 200
        failed      302 200 404 302 302 404 200
        *           302 302 404 302 302 404 302
    """,
    ("requests/<uuid:pk>/changes/<int:change_pk>/cancel/", "POST"): """
        submitted   302 302* 404 302 302 404 302*
        failed      302 302* 404 302 302 404 302*
        *           302 302  404 302 302 404 302
    """,
    ("requests/<uuid:pk>/changes/<int:change_pk>/retry/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/changes/<int:change_pk>/retry/", "POST"): """
        failed      302 302* 404 302 302 404 302*
        *           302 302  404 302 302 404 302
    """,
}
CHANGE_STATES = ["submitted", "approved", "applying", "applied", "failed", "rejected", "cancelled"]
LEGACY_VAULT = VAULT_SCOPE.replace("rg-team-payments", "rg-legacy").replace("kv-payments-demo", "kv-legacy")
CHANGE_POST = {
    "requests/<uuid:pk>/changes/<int:change_pk>/decide/": {"decision": "approve", "comment": "fine"},
    "requests/<uuid:pk>/changes/<int:change_pk>/cancel/": {"confirm": "yes"},
}


def make_change(cluster: Cluster, owner: User, state: str):
    from requests_app import changes
    from requests_app.models import ChangeRequest

    req = make_request(cluster, owner, "ready")
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    change = changes.submit_change(
        req, actor=owner, reason="The app reads the legacy vault too.", add=[workflow.GrantRequest(role, LEGACY_VAULT)]
    )
    ChangeRequest.objects.filter(pk=change.pk).update(status=state)
    return req, change


def new_change_form(req: IdentityRequest) -> dict:
    role = req.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return {
        "purpose": req.purpose,
        "reason": "The app reads the legacy vault too.",
        "add-TOTAL_FORMS": "1",
        "add-INITIAL_FORMS": "0",
        "add-MIN_NUM_FORMS": "0",
        "add-MAX_NUM_FORMS": "20",
        "add-0-role": str(role.pk),
        "add-0-scope": LEGACY_VAULT,
        "action": "submit",
    }


@pytest.mark.parametrize(("route", "method"), list(CHANGES), ids=[f"{m} /{r}" for r, m in CHANGES])
def test_change_urls(route, method, people, offline_cluster):
    from requests_app.models import ChangeRequest

    cells = parse(CHANGES[(route, method)], CHANGE_STATES)
    problems: list[str] = []
    for state in CHANGE_STATES:
        for role in ROLES:
            req, change = make_change(offline_cluster, people["owner"], state)
            if route.endswith("/changes/new/"):
                ChangeRequest.objects.filter(pk=change.pk).update(status="applied")  # none open: one may be asked
            before = (
                ChangeRequest.objects.filter(request=req).values_list("status", flat=True).first(),
                req.events.count(),
            )

            def changed(req=req, before=before) -> bool:
                now = (
                    ChangeRequest.objects.filter(request=req).values_list("status", flat=True).first(),
                    req.events.count(),
                )
                return now != before

            url = "/" + route.replace("<uuid:pk>", str(req.pk)).replace("<int:change_pk>", str(change.pk))
            data = new_change_form(req) if route.endswith("/changes/new/") else CHANGE_POST.get(route, {})
            problems += check_cell(
                f"{state:10} {role:8} {method} {url}",
                client_as(people[role]),
                method,
                url,
                data,
                cells[(state, role)],
                role,
                changed,
            )
    assert problems == [], "\n".join(problems)


# ---- issue 11: moving a ready identity to another cluster ------------------------------------------------------

# Rows: the move's state; the identity is ready, its requester (`owner`) asked for the move. Columns as above.
MOVES = {
    ("requests/<uuid:pk>/move/", "GET"): "*  302 200 404 302 302 404 200",
    ("requests/<uuid:pk>/move/", "POST"): "*  302 302* 404 302 302 404 302*",
    # Deciding: approvers and admins (never the asker).
    ("requests/<uuid:pk>/moves/<int:move_pk>/decide/", "GET"): DECIDE_GET,
    ("requests/<uuid:pk>/moves/<int:move_pk>/decide/", "POST"): """
        submitted   302 403 403 302* 403 403 302*
        *           302 403 403 302  403 403 302
    """,
    ("requests/<uuid:pk>/moves/<int:move_pk>/cancel/", "GET"): """
        submitted   302 200 404 302 302 404 200
        failed      302 200 404 302 302 404 200
        *           302 302 404 302 302 404 302
    """,
    ("requests/<uuid:pk>/moves/<int:move_pk>/cancel/", "POST"): """
        submitted   302 302* 404 302 302 404 302*
        failed      302 302* 404 302 302 404 302*
        *           302 302  404 302 302 404 302
    """,
    ("requests/<uuid:pk>/moves/<int:move_pk>/retry/", "GET"): NOT_SERVED,
    ("requests/<uuid:pk>/moves/<int:move_pk>/retry/", "POST"): """
        failed      302 302* 404 302 302 404 302*
        *           302 302  404 302 302 404 302
    """,
}
MOVE_POST = {
    "requests/<uuid:pk>/moves/<int:move_pk>/decide/": {"decision": "approve", "comment": "fine"},
    "requests/<uuid:pk>/moves/<int:move_pk>/cancel/": {"confirm": "yes"},
}


def move_target(cluster: Cluster) -> Cluster:
    """A cluster that keeps its identities where `cluster` does, with team-payments owned by the same team."""
    return Cluster.objects.get_or_create(
        name="aks-west",
        defaults={
            "subscription_id": cluster.subscription_id,
            "resource_group": cluster.resource_group,
            "location": "westeurope",
            "oidc_issuer_url": "https://localhost:1/oidc/west/",
            "api_server_url": "https://localhost:1/k8s/aks-west",
            "devops_group_id": OTHER_DEVOPS,
            "allowed_namespaces": ["team-payments"],
            "namespace_owners": dict(cluster.namespace_owners),
        },
    )[0]


def make_move(cluster: Cluster, owner: User, state: str):
    from requests_app import moves
    from requests_app.models import MoveRequest

    req = make_request(cluster, owner, "ready")
    move = moves.submit_move(
        req,
        actor=owner,
        cluster=move_target(cluster),
        namespace="team-payments",
        service_account=f"moved-{uuid.uuid4().hex[:8]}",
        reason="aks-demo is retired.",
    )
    MoveRequest.objects.filter(pk=move.pk).update(status=state)
    return req, move


@pytest.mark.parametrize(("route", "method"), list(MOVES), ids=[f"{m} /{r}" for r, m in MOVES])
def test_move_urls(route, method, people, offline_cluster):
    from requests_app.models import MoveRequest

    cells = parse(MOVES[(route, method)], CHANGE_STATES)
    problems: list[str] = []
    for state in CHANGE_STATES:
        for role in ROLES:
            req, move = make_move(offline_cluster, people["owner"], state)
            if route.endswith("/move/"):
                MoveRequest.objects.filter(pk=move.pk).update(status="rejected")  # none open: one may be asked
            before = (
                list(MoveRequest.objects.filter(request=req).values_list("status", flat=True)),
                req.events.count(),
            )

            def changed(req=req, before=before) -> bool:
                now = (
                    list(MoveRequest.objects.filter(request=req).values_list("status", flat=True)),
                    req.events.count(),
                )
                return now != before

            url = "/" + route.replace("<uuid:pk>", str(req.pk)).replace("<int:move_pk>", str(move.pk))
            if route.endswith("/move/"):
                data = {
                    "cluster": str(move_target(offline_cluster).pk),
                    "namespace": "team-payments",
                    "service_account": f"moved-{uuid.uuid4().hex[:8]}",
                    "reason": "aks-demo is retired.",
                    "action": "submit",
                }
            else:
                data = MOVE_POST.get(route, {})
            problems += check_cell(
                f"{state:10} {role:8} {method} {url}",
                client_as(people[role]),
                method,
                url,
                data,
                cells[(state, role)],
                role,
                changed,
            )
    assert problems == [], "\n".join(problems)
