"""Keyset (cursor) pagination on (created_at, id), newest first: pages that cost the same on row 1 and row 1,000,000.

An offset page (`LIMIT 50 OFFSET 25000`) reads and throws away every row before it, and its "page N of M" needs
an exact count of the whole filtered set. A keyset page starts from the last row shown instead, through an index on
(created_at, id), and knows only whether there are newer and older rows.

    page(qs, cursor_text, size) -> Page     newest first (the audit log, the API's audit endpoint); qs: filtered, not
                                            yet ordered; cursor_text: from a "newer"/"older" link
    queue_page(qs, params, prefix) -> QueuePage   oldest first (the approvals queue's sections), several per page

A cursor is opaque to people (base64 of direction, time and primary key) and checked on the way in: a bad one raises
BadCursor, which the audit log shows as a message (never a 500) and a queue section reads as its first page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from django.http import QueryDict

OLDER, NEWER = "o", "n"


class BadCursor(ValueError):
    """The cursor in the link cannot be read (edited, truncated or from another page)."""


@dataclass(frozen=True)
class Cursor:
    direction: str  # OLDER: rows after this key (newest first); NEWER: rows before it
    created_at: datetime
    id: Any  # the row's primary key: an int for audit events, a UUID for requests

    def encode(self) -> str:
        raw = f"{self.direction}|{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, model: type[Model] | None = None) -> Cursor:
        """The cursor in `text`, its key read as `model`'s primary key (default: an int id)."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            direction, when, pk = raw.split("|")
            created_at = datetime.fromisoformat(when)
            row_id = model._meta.pk.to_python(pk) if model is not None else int(pk)
        except (binascii.Error, UnicodeDecodeError, ValueError, ValidationError) as exc:
            raise BadCursor(text) from exc
        if direction not in (OLDER, NEWER) or created_at.tzinfo is None or row_id is None:
            raise BadCursor(text)
        if isinstance(row_id, int) and row_id < 1:
            raise BadCursor(text)
        return cls(direction, created_at, row_id)


@dataclass
class Page:
    rows: list[Any] = field(default_factory=list)
    newer: str | None = None  # the cursor of the page before (newer rows), None on the newest page
    older: str | None = None  # the cursor of the page after (older rows), None on the oldest page


Fetch = Callable[[QuerySet[Any], int], list[Any]]


def page(
    qs: QuerySet[Any],
    cursor_text: str | None,
    size: int,
    *,
    key: str = "created_at",
    model: type[Model] | None = None,
    fetch: Fetch | None = None,
) -> Page:
    """One page of `qs`, newest first by (`key`, id), from the cursor (or from the newest row). One query.

    `key` is a time field or annotation of `qs` (never null), `model` the model whose primary key the cursor
    carries (default: an int id). `fetch(ordered, n)` reads the first n rows of the cursor-bounded, ordered
    queryset (default: a slice); the identities search reads them its own way (search.first_identities)."""
    cursor = Cursor.decode(cursor_text, model) if cursor_text else None
    if fetch is None:
        fetch = _first
    if cursor is None or cursor.direction == OLDER:
        if cursor is not None:
            # `key <= t` lets the index bound the scan; the OR settles rows that share the time by id.
            qs = qs.filter(
                Q(**{f"{key}__lte": cursor.created_at}),
                Q(**{f"{key}__lt": cursor.created_at}) | Q(id__lt=cursor.id),
            )
        rows = fetch(qs.order_by(f"-{key}", "-id"), size + 1)
        more, rows = len(rows) > size, rows[:size]
        has_newer, has_older = cursor is not None, more
    else:
        newer = qs.filter(
            Q(**{f"{key}__gte": cursor.created_at}),
            Q(**{f"{key}__gt": cursor.created_at}) | Q(id__gt=cursor.id),
        )
        rows = fetch(newer.order_by(key, "id"), size + 1)
        if len(rows) <= size:
            # Back at the newest rows: show the newest full page rather than a short one (one query more).
            return page(qs, None, size, key=key, model=model, fetch=fetch)
        more, rows = True, rows[:size][::-1]
        has_newer, has_older = more, True
    result = Page(rows=rows)
    if rows and has_newer:
        result.newer = Cursor(NEWER, getattr(rows[0], key), rows[0].id).encode()
    if rows and has_older:
        result.older = Cursor(OLDER, getattr(rows[-1], key), rows[-1].id).encode()
    return result


def _first(ordered: QuerySet[Any], n: int) -> list[Any]:
    return list(ordered[:n])


# ---- oldest first: the approvals queue's sections (issue 13) ------------------------------------------------------
# Ten cards to a page: each carries the whole plan, the team and a decision form (~4.5 KiB of HTML), and at 25 a
# page of three full sections was 113 KiB and ~40 ms to render (bench/README.md, issue 13).
QUEUE_PAGE_SIZE = 10


@dataclass
class QueuePage:
    """One page of a queue and the query strings of its neighbours (None: there is none)."""

    rows: list[Any]
    newer: str | None = None
    older: str | None = None
    first: bool = True


def _queue_key(params: QueryDict, name: str, model: type[Model]) -> Cursor | None:
    # A queue's cursor that does not decode (typed, cut short, another model's) is its first page, not an error.
    try:
        return Cursor.decode(params[name], model) if params.get(name) else None
    except BadCursor:
        return None


def queue_page(queryset: QuerySet, params: QueryDict, prefix: str, size: int = QUEUE_PAGE_SIZE) -> QueuePage:
    """The page of `queryset` the request's `<prefix>_after` / `<prefix>_before` cursor asks for, oldest first, by
    (created_at, pk): `size + 1` rows, never an OFFSET nor a COUNT.

    The other sections' cursors in `params` are kept in the links, so paging one section leaves the others where
    they were.
    """
    model = queryset.model
    after = _queue_key(params, f"{prefix}_after", model)
    before = _queue_key(params, f"{prefix}_before", model)
    if before is not None:
        created, pk = before.created_at, before.id
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
            qs = qs.filter(Q(created_at__gt=after.created_at) | Q(created_at=after.created_at, pk__gt=after.id))
        rows = list(qs[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size]
        has_older = after is not None
    kept = {k: v for k, v in params.items() if not k.startswith(f"{prefix}_") and k.endswith(("_after", "_before"))}
    result = QueuePage(rows=rows, first=not has_older)
    if rows and has_newer:
        result.newer = "?" + urlencode(
            {**kept, f"{prefix}_after": Cursor(NEWER, rows[-1].created_at, rows[-1].pk).encode()}
        )
    if rows and has_older:
        result.older = "?" + urlencode(
            {**kept, f"{prefix}_before": Cursor(OLDER, rows[0].created_at, rows[0].pk).encode()}
        )
    elif has_older:  # a cursor past the end: back to the start
        result.older = "?" + urlencode(kept)
    return result
