"""The Entra sign-in adapter on its own: id_token validation against the emulator's published keys, and the
portal's app authenticating with a federated token file instead of a secret."""

from __future__ import annotations

import time

import pytest

from emulator import Emulator, load
from emulator.config import FederatedCredential
from requests_app.auth import entra
from requests_app.auth.entra import SignInError, validate_id_token
from tests.requests_app.signin import finish_sign_in, pick_account, sign_in, start_sign_in

CONTOSO = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
FABRIKAM = "8e3b7f2a-0000-4000-8000-0000000000ff"
RILEY = "11111111-1111-4111-8111-111111111111"


def claims_for(emu: Emulator, cloud, **changes) -> dict:
    now = int(time.time())
    claims = {
        "aud": cloud.ENTRA_CLIENT_ID,
        "iss": emu.entra_issuer(CONTOSO),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": RILEY,
        "sub": "pairwise-subject",
        "tid": CONTOSO,
        "name": "Riley Requester",
        "ver": "2.0",
    }
    return {**claims, **changes}


def contoso_token(emu: Emulator, cloud, **changes) -> str:
    return emu.tenant_key(CONTOSO).sign(claims_for(emu, cloud, **changes))


def refused(token: str, **kwargs) -> SignInError:
    with pytest.raises(SignInError) as e:
        validate_id_token(token, **kwargs)
    return e.value


def test_a_token_of_our_tenant_for_our_app_is_accepted(cloud, emu):
    assert validate_id_token(contoso_token(emu, cloud))["oid"] == RILEY


def test_a_token_signed_by_another_tenant_is_refused(cloud, emu):
    token = emu.tenant_key(FABRIKAM).sign(claims_for(emu, cloud, iss=emu.entra_issuer(FABRIKAM), tid=FABRIKAM))
    assert refused(token).reason == "invalid_token"


def test_a_token_claiming_another_tenant_is_refused(cloud, emu):
    assert refused(contoso_token(emu, cloud, tid=FABRIKAM)).reason == "wrong_tenant"


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "00000000-0000-0000-0000-000000000000"},
        {"iss": "https://login.microsoftonline.com/7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a/v2.0"},
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600, "iat": int(time.time()) + 3600},
        {"oid": ""},
    ],
    ids=["audience", "issuer", "expired", "not-yet-valid", "no-oid"],
)
def test_a_token_with_a_bad_claim_is_refused(cloud, emu, changes):
    assert refused(contoso_token(emu, cloud, **changes)).reason == "invalid_token"


OTHER_APP = "0b0b0b0b-0000-4000-8000-00000000a0a0"
OURS = "the portal's client ID"


def naming_us(cloud, changes: dict) -> dict:
    """`changes` with OURS replaced by the portal's client ID (known only once the `cloud` fixture ran)."""

    def one(value):
        return cloud.ENTRA_CLIENT_ID if value == OURS else value

    return {k: [one(a) for a in v] if isinstance(v, list) else one(v) for k, v in changes.items()}


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": [OURS, OTHER_APP]},  # several audiences, no azp
        {"aud": [OURS, OTHER_APP], "azp": OTHER_APP},  # issued to the other app
        {"azp": OTHER_APP},  # one audience, but issued to another app
    ],
    ids=["several-audiences-no-azp", "several-audiences-azp-other", "azp-other"],
)
def test_a_token_not_issued_to_the_portal_is_refused(cloud, emu, changes):
    assert refused(contoso_token(emu, cloud, **naming_us(cloud, changes))).reason == "azp"


@pytest.mark.parametrize(
    "changes",
    [{"aud": [OURS, OTHER_APP], "azp": OURS}, {"aud": [OURS]}, {"azp": OURS}],
    ids=["several-audiences-azp-ours", "one-audience-in-a-list", "azp-ours"],
)
def test_a_token_issued_to_the_portal_is_accepted_whatever_its_audiences(cloud, emu, changes):
    assert validate_id_token(contoso_token(emu, cloud, **naming_us(cloud, changes)))["oid"] == RILEY


def test_a_tampered_token_is_refused(cloud, emu):
    header, payload, signature = contoso_token(emu, cloud).split(".")
    other = contoso_token(emu, cloud, oid="44444444-4444-4444-8444-444444444444").split(".")[1]
    assert refused(f"{header}.{other}.{signature}").reason == "invalid_token"
    assert refused("not-a-jwt").reason == "invalid_token"


def test_an_unsigned_token_is_refused(cloud, emu):
    import jwt

    token = jwt.encode(claims_for(emu, cloud), key=None, algorithm="none")
    assert refused(token).reason == "invalid_token"


def test_a_nonce_from_another_sign_in_is_refused(cloud, emu):
    token = contoso_token(emu, cloud, nonce=entra._nonce_hash("ours"))
    assert validate_id_token(token, nonce="ours")["oid"] == RILEY
    assert refused(token, nonce="theirs").reason == "nonce"


def test_the_logout_url_returns_to_the_portal(cloud, emu):
    assert entra.logout_url("http://localhost:8000/") == (
        f"{emu.url}/{CONTOSO}/oauth2/v2.0/logout?post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A8000%2F"
    )


# ----- the portal's app with a federated token file (workload identity), no secret ---------------------
@pytest.fixture
def federated_emu(tmp_path):
    """A private emulator whose portal app trusts the aks-demo cluster's ServiceAccount portal/portal and has
    no secret (the shared emulator's config stays untouched)."""
    config = load(None)
    with Emulator(config, data_dir=tmp_path / "emu") as emu:
        app = config.tenants[0].apps[0]
        app.secrets.clear()
        app.federated_credentials.append(
            FederatedCredential(
                issuer=emu.cluster_issuer(config.clusters[0]), subject="system:serviceaccount:portal:portal"
            )
        )
        yield emu


def cluster_token(emu: Emulator, *, subject: str = "system:serviceaccount:portal:portal") -> str:
    """What the kubelet projects into the portal's pod: a ServiceAccount token for api://AzureADTokenExchange."""
    cluster = emu.config.clusters[0]
    now = int(time.time())
    claims = {
        "iss": emu.cluster_issuer(cluster),
        "sub": subject,
        "aud": ["api://AzureADTokenExchange"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    return emu.cluster_key(cluster.name).sign(claims)


@pytest.fixture
def federated(settings, federated_emu, tmp_path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(cluster_token(federated_emu))
    settings.ENTRA_TENANT_ID = CONTOSO
    settings.ENTRA_CLIENT_ID = federated_emu.config.tenants[0].apps[0].client_id
    settings.ENTRA_CLIENT_SECRET = ""
    settings.ENTRA_FEDERATED_TOKEN_FILE = str(token_file)
    settings.ENTRA_AUTHORITY_HOST = federated_emu.url
    settings.ENTRA_INSTANCE_DISCOVERY = False
    settings.GRAPH_URL = f"{federated_emu.url}/graph"
    settings.PORTAL_CA_BUNDLE = str(federated_emu.tls.ca_bundle)
    settings.PORTAL_APPROVER_GROUPS = ["0f1e2d3c-0001-4000-8000-000000000001"]
    return token_file


@pytest.mark.django_db
def test_the_portal_signs_users_in_with_a_federated_token_file(client, federated, federated_emu):
    user = sign_in(client, federated_emu, "avery@contoso.example")
    assert user.is_approver


@pytest.mark.django_db
def test_the_token_file_is_read_again_for_every_sign_in(client, federated, federated_emu):
    federated.write_text(cluster_token(federated_emu, subject="system:serviceaccount:portal:someone-else"))
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(federated_emu, auth_uri, "avery@contoso.example")
    resp = finish_sign_in(client, callback_url)
    assert resp.status_code == 400
    assert b"invalid_client" in resp.content

    federated.write_text(cluster_token(federated_emu))  # the kubelet rotated the file
    assert sign_in(client, federated_emu, "avery@contoso.example").is_approver
