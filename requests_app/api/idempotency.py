"""`Idempotency-Key` on creating a request: a caller retrying after a lost answer gets the first request back.

The key is remembered per caller with a hash of the body for PORTAL_API_IDEMPOTENCY_SECONDS. The same key with the
same body is a replay (the request as it is now, `Idempotent-Replayed: true`); with another body it is refused
(422), since the caller is mixing up two different requests. Only a created request is remembered: a request
refused for its input may be corrected and sent again under the same key.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from ..models import IdempotencyKey, IdentityRequest, User
from .errors import Problem

MAX_KEY_LENGTH = 255


def check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(400, "bad-idempotency-key", f"An Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable characters.")
    return key


def body_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(user: User, key: str, digest: str) -> IdentityRequest | None:
    """The request first created under `key` by `user` (None: the key is new or expired); 422 for another body."""
    now = timezone.now()
    IdempotencyKey.objects.filter(expires_at__lte=now).delete()  # expired keys, everyone's: one indexed delete
    found = IdempotencyKey.objects.filter(user=user, key=key).select_related("request").first()
    if found is None:
        return None
    if found.body_hash != digest:
        raise Problem(
            422,
            "idempotency-key-reused",
            "This Idempotency-Key was used for a request with another body; use a new key for a new request.",
        )
    return found.request


def remember(user: User, key: str, digest: str, req: IdentityRequest) -> None:
    now = timezone.now()
    expires = now + timedelta(seconds=settings.PORTAL_API_IDEMPOTENCY_SECONDS)
    IdempotencyKey.objects.create(user=user, key=key, body_hash=digest, request=req, created_at=now, expires_at=expires)
