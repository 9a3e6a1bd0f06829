"""Keyset (cursor) pagination on (created_at, id), newest first: pages that cost the same on row 1 and row 1,000,000.

An offset page (`LIMIT 50 OFFSET 25000`) reads and throws away every row before it, and its "page N of M" needs
an exact count of the whole filtered set. A keyset page starts from the last row shown instead, through an index on
(created_at, id), and knows only whether there are newer and older rows.

    page(qs, cursor_text, size) -> Page     qs: filtered, not yet ordered; cursor_text: from a "newer"/"older" link

A cursor is opaque to people (base64 of direction, time and id) and checked on the way in: a bad one raises
BadCursor, which the page shows as a message (never a 500).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

OLDER, NEWER = "o", "n"


class BadCursor(ValueError):
    """The cursor in the link cannot be read (edited, truncated or from another page)."""


@dataclass(frozen=True)
class Cursor:
    direction: str  # OLDER: rows after this key (newest first); NEWER: rows before it
    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.direction}|{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            direction, when, pk = raw.split("|")
            created_at, row_id = datetime.fromisoformat(when), int(pk)
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise BadCursor(text) from exc
        if direction not in (OLDER, NEWER) or created_at.tzinfo is None or row_id < 1:
            raise BadCursor(text)
        return cls(direction, created_at, row_id)


@dataclass
class Page:
    rows: list[Any] = field(default_factory=list)
    newer: str | None = None  # the cursor of the page before (newer rows), None on the newest page
    older: str | None = None  # the cursor of the page after (older rows), None on the oldest page


def page(qs: QuerySet[Any], cursor_text: str | None, size: int) -> Page:
    """One page of `qs`, newest first, from the cursor (or from the newest row). One query."""
    cursor = Cursor.decode(cursor_text) if cursor_text else None
    if cursor is None or cursor.direction == OLDER:
        if cursor is not None:
            # `created_at <= t` lets the index bound the scan; the OR settles rows that share the time by id.
            qs = qs.filter(
                Q(created_at__lte=cursor.created_at),
                Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id),
            )
        rows = list(qs.order_by("-created_at", "-id")[: size + 1])
        more, rows = len(rows) > size, rows[:size]
        has_newer, has_older = cursor is not None, more
    else:
        newer = qs.filter(
            Q(created_at__gte=cursor.created_at),
            Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id),
        )
        rows = list(newer.order_by("created_at", "id")[: size + 1])
        if len(rows) <= size:
            # Back at the newest rows: show the newest full page rather than a short one (one query more).
            return page(qs, None, size)
        more, rows = True, rows[:size][::-1]
        has_newer, has_older = more, True
    result = Page(rows=rows)
    if rows and has_newer:
        result.newer = Cursor(NEWER, rows[0].created_at, rows[0].id).encode()
    if rows and has_older:
        result.older = Cursor(OLDER, rows[-1].created_at, rows[-1].id).encode()
    return result
