"""Keyset (cursor) pages of a queue, oldest first: ordered by (created_at, id), never an OFFSET nor a COUNT.

A page reads `size + 1` rows from the index on (created_at, id): the extra row only says whether there is more. A
cursor is the (created_at, id) of the row a page starts after ("newer") or ends before ("older"), encoded opaque
in the URL; a cursor that does not decode is ignored (the first page), never an error page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from django.http import QueryDict

PAGE_SIZE = 25


def encode(row: Model) -> str:
    raw = f"{row.created_at.isoformat()}|{row.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, model: type[Model]) -> tuple[dt.datetime, Any] | None:
    """The (created_at, pk) in a cursor, or None when it is not one of ours (typed, cut short, another model's)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, pk = raw.split("|", 1)
        created = dt.datetime.fromisoformat(when)
        return created, model._meta.pk.to_python(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError, ValidationError):
        return None


@dataclass
class Page:
    """One page of a queue and the query strings of its neighbours (None: there is none)."""

    rows: list[Any]
    newer: str | None = None
    older: str | None = None
    first: bool = True
    extra: dict[str, str] = field(default_factory=dict)


def page(queryset: QuerySet, params: QueryDict, prefix: str, size: int = PAGE_SIZE) -> Page:
    """The page of `queryset` the request's `<prefix>_after` / `<prefix>_before` cursor asks for, oldest first.

    The other sections' cursors in `params` are kept in the links, so paging one section leaves the others where
    they were.
    """
    model = queryset.model
    after = decode(params.get(f"{prefix}_after", ""), model) if params.get(f"{prefix}_after") else None
    before = decode(params.get(f"{prefix}_before", ""), model) if params.get(f"{prefix}_before") else None
    if before is not None:
        created, pk = before
        rows = list(
            queryset.filter(Q(created_at__lt=created) | Q(created_at=created, pk__lt=pk)).order_by(
                "-created_at", "-pk"
            )[: size + 1]
        )
        more_older = len(rows) > size
        rows = rows[:size][::-1]
        has_older, has_newer = more_older, True
    else:
        qs = queryset.order_by("created_at", "pk")
        if after is not None:
            created, pk = after
            qs = qs.filter(Q(created_at__gt=created) | Q(created_at=created, pk__gt=pk))
        rows = list(qs[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size]
        has_older = after is not None
    kept = {k: v for k, v in params.items() if not k.startswith(f"{prefix}_") and k.endswith(("_after", "_before"))}
    result = Page(rows=rows, first=not has_older)
    if rows and has_newer:
        result.newer = "?" + urlencode({**kept, f"{prefix}_after": encode(rows[-1])})
    if rows and has_older:
        result.older = "?" + urlencode({**kept, f"{prefix}_before": encode(rows[0])})
    elif has_older:  # a cursor past the end: back to the start
        result.older = "?" + urlencode(kept)
    return result
