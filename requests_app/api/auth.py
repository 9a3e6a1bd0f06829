"""Entra bearer tokens for the portal's own API, and who they stand for.

A token is checked as the id_token is at sign-in (requests_app/auth/entra.py, the same cached discovery document
and signing keys): RS256 signature by a key of the configured tenant, issuer, audience (the portal's application
ID URI, PORTAL_API_AUDIENCE), exp/nbf/iat with clock skew, and the tenant. Then:

- a person's (delegated) token must carry one of PORTAL_API_SCOPES in `scp`. They are the portal User keyed by
  tenant + object ID, as at sign-in; their groups and app roles come from the token (Graph on group overage) and
  make them approver, admin or DevOps member exactly as at sign-in (requests_app/auth/roles.py).
- a pipeline's app-only token (no `scp`; `sub` is its service principal's object ID) must carry one of
  PORTAL_API_APP_ROLES in `roles`. It is a portal User keyed by tenant + the service principal's object ID, named
  after the app; its groups (team membership) and roles (an approver or admin role only if Entra assigned it one)
  come from the token too, so it may do what a person with the same memberships may: ask for identities in its
  team's namespaces, read and cancel its own requests; never approve unless it holds an approver role.

No cookie is looked at: the session is not an authentication for the API, so CSRF does not apply.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
from django.conf import settings
from django.db import IntegrityError, transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ..auth import clock
from ..auth.entra import CLOCK_SKEW, SignInError, _client
from ..auth.refresh import refresh_roles
from ..auth.roles import assign
from ..cloud.errors import CloudError
from ..models import User
from .errors import Problem

log = logging.getLogger(__name__)

_ROLE_FIELDS = ("entra_groups", "entra_roles", "is_approver", "is_portal_admin", "is_staff", "is_superuser")


class TokenRefused(exceptions.AuthenticationFailed):
    """401 with a reason; `WWW-Authenticate: Bearer error="invalid_token"` is added by the authenticator."""


def audience() -> str:
    return settings.PORTAL_API_AUDIENCE or f"api://{settings.ENTRA_CLIENT_ID}"


def validate_access_token(token: str) -> dict[str, Any]:
    """The claims of an access token for the portal's API from the configured tenant, or TokenRefused."""
    client = _client()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise TokenRefused("The bearer token is malformed.") from e
    try:
        issuer = client.discovery().get("issuer", "")
        key = client.signing_key(str(header.get("kid", "")))
    except SignInError as e:  # Entra's keys could not be read: not the caller's fault
        raise Problem(503, "entra-unreachable", f"{e.message} The token could not be checked; try again.") from e
    if key is None:
        raise TokenRefused("The bearer token is not signed by a key of the configured tenant.")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=audience(),
            issuer=issuer,
            leeway=CLOCK_SKEW,
            options={"require": ["iss", "aud", "exp", "iat", "sub", "oid", "tid"]},
        )
    except jwt.ExpiredSignatureError as e:
        raise TokenRefused("The bearer token has expired.") from e
    except jwt.InvalidAudienceError as e:
        raise TokenRefused(f"The bearer token is not for this API (its audience must be {audience()}).") from e
    except jwt.PyJWTError as e:
        raise TokenRefused(f"The bearer token is not valid: {e}.") from e
    if str(claims["tid"]).lower() != settings.ENTRA_TENANT_ID.lower():
        raise TokenRefused("The bearer token belongs to another organisation (tenant).")
    return claims


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value] if isinstance(value, list) else []


def caller_of(claims: dict[str, Any]) -> User:
    """The portal User the token stands for, with groups and roles as the token says (saved when they changed)."""
    scopes = _words(claims.get("scp", ""))
    roles = [str(r) for r in claims.get("roles", []) if isinstance(r, str)]
    groups = [str(g) for g in claims.get("groups", []) if isinstance(g, str)]
    overage = "groups" in (claims.get("_claim_names") or {}) or bool(claims.get("hasgroups"))
    if scopes:
        if not set(scopes) & set(settings.PORTAL_API_SCOPES):
            raise TokenRefused(f"The token carries none of the API's scopes ({', '.join(settings.PORTAL_API_SCOPES)}).")
        name = str(claims.get("name") or claims.get("preferred_username") or claims["oid"])
        email = str(claims.get("email") or claims.get("preferred_username") or "")
    else:
        # App-only: Entra sets `sub` to the service principal's object ID; a person's tokens are pairwise.
        if str(claims["sub"]) != str(claims["oid"]):
            raise TokenRefused("A token without delegated scopes must be an application's own (app-only) token.")
        if not set(roles) & set(settings.PORTAL_API_APP_ROLES):
            raise exceptions.PermissionDenied(
                f"This application holds none of the API's app roles ({', '.join(settings.PORTAL_API_APP_ROLES)})."
            )
        name = str(claims.get("app_displayname") or f"application {claims.get('appid') or claims.get('azp')}")
        email = ""
    user = _user(str(claims["tid"]), str(claims["oid"]), name, email, app=not scopes)
    if not user.is_active:
        raise TokenRefused("This account is disabled in the portal.")
    if overage and scopes:
        # Too many groups for the token: read them from Graph, as sign-in does (with the portal's own credential).
        try:
            refresh_roles(user)
        except CloudError as e:
            raise Problem(503, "graph-unreachable", "Your group memberships could not be read; try again.") from e
        return user
    if overage:
        raise TokenRefused("The application's token names too many groups; the API cannot read them.")
    before = [getattr(user, f) for f in _ROLE_FIELDS]
    assign(user, groups, roles, checked_at=clock.now())
    if [getattr(user, f) for f in _ROLE_FIELDS] != before or user.display_name != name[:256]:
        user.display_name = name[:256]
        user.save(update_fields=[*_ROLE_FIELDS, "roles_checked_at", "display_name"])
    return user


APP_USERNAME_PREFIX = User.PIPELINE_USERNAME_PREFIX


def _user(tenant_id: str, object_id: str, name: str, email: str, *, app: bool) -> User:
    # A pipeline's user is told apart by its username (`app:<object ID>`): Graph knows it as a service principal,
    # not a user, which whatever asks Entra about people (e.g. lifecycle's requester check) must allow for.
    username = f"{APP_USERNAME_PREFIX}{object_id}" if app else object_id
    defaults = {"username": username, "display_name": name[:256], "email": email[:254]}
    try:
        with transaction.atomic():
            user, created = User.objects.get_or_create(tenant_id=tenant_id, object_id=object_id, defaults=defaults)
    except IntegrityError:  # the same caller's first two calls at once
        user, created = User.objects.get(tenant_id=tenant_id, object_id=object_id), False
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class EntraBearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <Entra access token for the portal's API>`; anything else is not authenticated."""

    def authenticate(self, request: Request) -> tuple[User, dict[str, Any]] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise TokenRefused("The Authorization header carries no token.")
        return caller_of(validate_access_token(token)), {}

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{audience()}"'


class EntraBearerScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme: an Entra access token for the portal's application ID URI."""

    target_class = "requests_app.api.auth.EntraBearerAuthentication"
    name = "entraBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                f"An Entra ID access token for {audience()}: a person's, with the scope "
                f"{', '.join(settings.PORTAL_API_SCOPES)}, or a pipeline's app-only token holding the app role "
                f"{', '.join(settings.PORTAL_API_APP_ROLES)} (e.g. `az account get-access-token --resource "
                f"{audience()}`)."
            ),
        }
