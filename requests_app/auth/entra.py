"""The Entra ID sign-in adapter: msal's authorization-code flow, id_token validation, Graph group overage.

Everything the portal says to Entra ID (and to Graph, for sign-in) goes through here; failures come out as
`SignInError`. msal does the protocol (PKCE, state, nonce); msal does NOT validate the id_token, so
`validate_id_token` checks signature, issuer, audience, lifetime and tenant itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import msal
import requests
from django.conf import settings
from msal.exceptions import MsalError, MsalServiceError

from ..cloud.timeouts import is_timeout, timeouts

log = logging.getLogger(__name__)

# A Graph permission, so the token response carries a Graph token for group overage. msal adds
# openid, profile and offline_access itself.
SCOPES = ["User.Read"]
CLOCK_SKEW = 300  # seconds of leeway on exp/nbf/iat, as Entra's own guidance allows
JWKS_MAX_AGE = 24 * 3600
JWKS_MIN_REFETCH = 30  # an unknown kid refetches the key set at most this often (key rotation)

# The code comes back in the query, not by form_post: the session cookie is SameSite=Lax, so a cross-site POST
# from Entra would arrive without the session that holds the flow. msal warns about this on every sign-in.
warnings.filterwarnings("ignore", message=r"response_mode='form_post' is recommended", category=UserWarning)


class SignInError(Exception):
    """A sign-in that cannot complete. `reason` is a short code for the audit log; the message is for people.

    `permanent` is False when Entra or Graph could not be reached (trying again may help).
    """

    def __init__(self, message: str, *, reason: str, permanent: bool = True):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class EntraIdentity:
    """Who signed in, from a validated id_token (and Graph when the token had too many groups)."""

    tenant_id: str
    object_id: str
    name: str
    email: str
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    groups_from_graph: bool = False


@dataclass(frozen=True)
class Config:
    """The settings one Entra client is built from (a change of any of them builds a new client)."""

    tenant_id: str
    client_id: str
    client_secret: str
    token_file: str
    authority_host: str
    instance_discovery: bool
    graph_url: str
    ca_bundle: str

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @classmethod
    def from_settings(cls) -> Config:
        return cls(
            tenant_id=settings.ENTRA_TENANT_ID,
            client_id=settings.ENTRA_CLIENT_ID,
            client_secret=settings.ENTRA_CLIENT_SECRET,
            token_file=settings.ENTRA_FEDERATED_TOKEN_FILE,
            authority_host=settings.ENTRA_AUTHORITY_HOST.rstrip("/"),
            instance_discovery=settings.ENTRA_INSTANCE_DISCOVERY,
            graph_url=settings.GRAPH_URL.rstrip("/"),
            ca_bundle=settings.PORTAL_CA_BUNDLE,
        )


class _Session(requests.Session):
    """requests with our CA bundle and the portal's timeouts, ignoring REQUESTS_CA_BUNDLE/proxies from the
    environment (msal ignores `verify=` and `timeout=` when given an http_client; an explicit session is the
    reliable way). A sign-in should fail visibly rather than hang a web worker."""

    def __init__(self, verify: str | bool):
        super().__init__()
        self.trust_env = False
        self.verify = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeouts()
        return super().request(method, url, *args, **kwargs)


class _NoTokenCache(msal.TokenCache):
    """The portal keeps no user tokens: the Graph token is used once, during sign-in. A shared app with
    msal's default in-memory cache would keep every user's tokens for the life of the process."""

    def add(self, event: dict[str, Any], now: Any = None) -> None:
        return None


class _Client:
    """One configuration's msal app, discovery document and signing keys, built on first use."""

    def __init__(self, config: Config):
        self.config = config
        self.session = _Session(config.ca_bundle or True)
        self._lock = threading.RLock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched: float | None = None  # time.monotonic() of the last JWKS fetch

    # -- msal ------------------------------------------------------------------------------------
    def app(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                # The constructor fetches the openid-configuration: only now, not at import or per request.
                self._app = msal.ConfidentialClientApplication(
                    self.config.client_id,
                    client_credential=self._credential(),
                    authority=self.config.authority,
                    instance_discovery=self.config.instance_discovery,
                    http_client=self.session,
                    token_cache=_NoTokenCache(),
                )
            return self._app

    def _credential(self) -> str | dict[str, Any]:
        if self.config.token_file:
            path = Path(self.config.token_file)
            # Re-read on every use: the kubelet rotates the projected token file.
            return {"client_assertion": lambda: path.read_text().strip()}
        return self.config.client_secret

    # -- discovery and keys --------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery is None:
                url = f"{self.config.authority}/v2.0/.well-known/openid-configuration"
                self._discovery = self._get_json(url)
            return self._discovery

    def signing_key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            age = None if self._keys_fetched is None else time.monotonic() - self._keys_fetched
            stale = age is None or age > JWKS_MAX_AGE
            if stale or (kid not in self._keys and age > JWKS_MIN_REFETCH):
                self._keys = self._fetch_keys()
                self._keys_fetched = time.monotonic()
            return self._keys.get(kid)

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        uri = self.discovery().get("jwks_uri")
        if not uri:
            raise SignInError("Entra ID's discovery document names no signing keys.", reason="discovery")
        keys = {}
        for jwk in self._get_json(uri).get("keys", []):
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
            except (KeyError, jwt.PyJWTError):
                continue  # a key we cannot use (another type or algorithm) cannot have signed our token
        return keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            resp = self.session.get(url)
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError) as e:
            log.warning("Entra ID request failed: %s: %s", url, e)
            raise _unreachable(e) from e


@functools.lru_cache(maxsize=4)
def _client_for(config: Config) -> _Client:
    return _Client(config)


def _client() -> _Client:
    return _client_for(Config.from_settings())


def _unreachable(e: Exception) -> SignInError:
    """Entra ID did not answer (in time, or at all): a passing failure; trying again may help."""
    if is_timeout(e):
        return SignInError(
            "Microsoft Entra ID did not answer in time. Try again in a moment.", reason="timeout", permanent=False
        )
    return SignInError("Microsoft Entra ID could not be reached.", reason="unreachable", permanent=False)


# ----- the sign-in -------------------------------------------------------------------------------------
def begin_sign_in(redirect_uri: str) -> dict[str, Any]:
    """Start an authorization-code flow; keep the returned dict (JSON-safe) and send the browser to
    `flow["auth_uri"]`."""
    try:
        return _client().app().initiate_auth_code_flow(SCOPES, redirect_uri=redirect_uri)
    except SignInError:
        raise
    except (requests.RequestException, MsalError, ValueError) as e:
        log.warning("starting an Entra sign-in failed: %s", e)
        raise _unreachable(e) from e


def complete_sign_in(flow: dict[str, Any], auth_response: dict[str, str]) -> EntraIdentity:
    """Redeem the code Entra sent back (state, PKCE and nonce checked by msal), validate the id_token and
    work out the user's groups and app roles."""
    result = _redeem(flow, auth_response)
    claims = validate_id_token(result.get("id_token", ""), nonce=flow.get("nonce"))
    groups, from_graph = _groups(claims, result.get("access_token"))
    return EntraIdentity(
        tenant_id=str(claims["tid"]),
        object_id=str(claims["oid"]),
        name=str(claims.get("name") or claims.get("preferred_username") or claims["oid"]),
        email=str(claims.get("email") or claims.get("preferred_username") or ""),
        groups=groups,
        roles=[str(r) for r in claims.get("roles", [])],
        groups_from_graph=from_graph,
    )


def _redeem(flow: dict[str, Any], auth_response: dict[str, str]) -> dict[str, Any]:
    try:
        result = _client().app().acquire_token_by_auth_code_flow(dict(flow), auth_response)
    except SignInError:
        raise
    except (requests.RequestException, MsalServiceError) as e:
        # Unreachable, or an answer msal could not read (a 5xx page): Entra is having trouble.
        log.warning("redeeming an Entra code failed: %s", e)
        raise _unreachable(e) from e
    except ValueError as e:  # msal: state mismatch and other client-side checks
        raise SignInError("The sign-in response did not match the sign-in that was started.", reason="state") from e
    except RuntimeError as e:  # msal: the id_token's nonce is not ours
        raise SignInError("The sign-in response was not for this sign-in.", reason="nonce") from e
    if "error" in result:
        error = str(result.get("error"))
        description = str(result.get("error_description") or "")
        # The first line of Entra's description is the useful one (AADSTS code and text).
        raise SignInError(
            f"Microsoft Entra ID refused the sign-in: {error}. {description.splitlines()[0] if description else ''}",
            reason=f"entra:{error}",
        )
    return result


def validate_id_token(token: str, *, nonce: str | None = None) -> dict[str, Any]:
    """The claims of an id_token from our tenant for our app, or SignInError.

    Signature (RS256, the tenant's published keys), issuer (as discovery states it), audience (our client ID),
    the authorized party (azp) when there are several audiences, exp/nbf/iat (with clock skew), tenant (only
    the configured one), and the nonce when given (msal does not validate id_tokens; we check all of it).
    """
    client = _client()
    config = client.config
    if not token:
        raise SignInError("Microsoft Entra ID sent no id_token.", reason="invalid_token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise SignInError("The id_token is malformed.", reason="invalid_token") from e
    issuer = client.discovery().get("issuer", "")
    key = client.signing_key(str(header.get("kid", "")))
    if key is None:
        raise SignInError("The id_token is not signed by a key of the configured tenant.", reason="invalid_token")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=config.client_id,
            issuer=issuer,
            leeway=CLOCK_SKEW,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.PyJWTError as e:
        raise SignInError(f"The id_token is not valid: {e}.", reason="invalid_token") from e
    _check_authorized_party(claims, config.client_id)
    if str(claims.get("tid", "")).lower() != config.tenant_id.lower():
        raise SignInError("This account belongs to another organisation (tenant).", reason="wrong_tenant")
    if not claims.get("oid"):
        raise SignInError("The id_token names no user (oid).", reason="invalid_token")
    if nonce is not None and claims.get("nonce") != _nonce_hash(nonce):
        raise SignInError("The sign-in response was not for this sign-in.", reason="nonce")
    return claims


def _check_authorized_party(claims: dict[str, Any], client_id: str) -> None:
    """OpenID Connect Core 3.1.3.7: a token with several audiences must name the party it was issued to (azp),
    and an azp, when present, must be the portal. PyJWT's audience check passes as soon as our client ID is one
    of the audiences, so a token issued to another app that merely lists the portal would get through."""
    audience = claims.get("aud")
    several = isinstance(audience, list) and len(audience) > 1
    if (several or "azp" in claims) and claims.get("azp") != client_id:
        raise SignInError(
            "The id_token was issued to another application (its authorized party, azp, is not this portal).",
            reason="azp",
        )


def _nonce_hash(nonce: str) -> str:
    # msal sends sha256(nonce) in the authorize request; Entra echoes that value.
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


# ----- groups -------------------------------------------------------------------------------------------
def _groups(claims: dict[str, Any], access_token: str | None) -> tuple[list[str], bool]:
    """The `groups` claim, or on overage (too many groups for a token) the memberships from Graph."""
    overage = "groups" in (claims.get("_claim_names") or {}) or bool(claims.get("hasgroups"))
    if not overage:
        return [str(g) for g in claims.get("groups", [])], False
    if not access_token:
        raise SignInError("Your group memberships could not be read (no Graph token).", reason="graph")
    return member_groups(access_token), True


def member_groups(access_token: str) -> list[str]:
    """The signed-in user's group (and directory object) IDs from Graph `me/getMemberObjects`.

    Always the configured GRAPH_URL, never the endpoint named in `_claim_sources`: a token must not steer
    where the portal sends the user's Graph token.
    """
    client = _client()
    url = f"{client.config.graph_url}/v1.0/me/getMemberObjects"
    try:
        resp = client.session.post(
            url, json={"securityEnabledOnly": False}, headers={"Authorization": f"Bearer {access_token}"}
        )
    except requests.RequestException as e:
        log.warning("Graph getMemberObjects failed: %s", e)
        raise SignInError(
            "Your group memberships could not be read from Microsoft Graph"
            f"{' (it did not answer in time)' if is_timeout(e) else ''}. Try again in a moment.",
            reason="graph",
            permanent=False,
        ) from e
    if resp.status_code != 200:
        log.warning("Graph getMemberObjects answered %s: %s", resp.status_code, resp.text[:500])
        raise SignInError(
            f"Your group memberships could not be read from Microsoft Graph (HTTP {resp.status_code}).",
            reason="graph",
            permanent=resp.status_code < 500 and resp.status_code != 429,
        )
    try:
        return [str(v) for v in resp.json()["value"]]
    except (ValueError, KeyError, TypeError) as e:
        raise SignInError("Microsoft Graph answered with something unexpected.", reason="graph") from e


# ----- sign-out ----------------------------------------------------------------------------------------
def logout_url(post_logout_redirect_uri: str) -> str:
    """Entra's end-session endpoint, which comes back to the portal afterwards (no network call)."""
    config = Config.from_settings()
    return f"{config.authority}/oauth2/v2.0/logout?{urlencode({'post_logout_redirect_uri': post_logout_redirect_uri})}"
