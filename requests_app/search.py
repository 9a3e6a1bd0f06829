"""Free-text search for the audit log and the identities page (issue 13): answered from trigram indexes.

`text__icontains` over each table's search expression (models.audit_search_text, request_search_text,
grant_search_text) compiles on PostgreSQL to `UPPER(<expression>) LIKE UPPER('%word%')`, the very expression
migration 0029 indexes with gin_trgm_ops, so a search reads the index's matches instead of every row. A word
shorter than MIN_CHARS has no trigram to look up: it is refused with a message (SearchError), never run as a scan.
Matches in other tables come in through their own index and a UNION of ids, not an OR over a join (which
PostgreSQL can only answer by reading every row). On SQLite the same queries are plain icontains.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import (
    AuditEvent,
    IdentityRequest,
    RoleGrant,
    User,
    audit_search_text,
    grant_search_text,
    request_search_text,
)

MIN_CHARS = 3  # pg_trgm's trigrams: a shorter word has none, so no index can find it
MAX_WORDS = 5
TOO_SHORT = f"Search for words of at least {MIN_CHARS} characters: a shorter one would read every row."
TOO_MANY = f"Search for at most {MAX_WORDS} words."


class SearchError(ValueError):
    """The search text cannot be answered from the index (the message says why, for the page)."""


def words(text: str) -> list[str]:
    """The words of `text`, each long enough for the trigram index; SearchError if one is not."""
    found = text.split()
    if any(len(w) < MIN_CHARS for w in found):
        raise SearchError(TOO_SHORT)
    if len(found) > MAX_WORDS:
        raise SearchError(TOO_MANY)
    return found


def _matching_requests(word: str) -> QuerySet[IdentityRequest]:
    return IdentityRequest.objects.alias(text=request_search_text()).filter(text__icontains=word).order_by()


def audit_events(qs: QuerySet[AuditEvent], text: str) -> QuerySet[AuditEvent]:
    """`qs` narrowed to events with every word of `text` in the actor's name, the action, the details, or the
    identity name, namespace or ServiceAccount of their request. SearchError for a word too short."""
    for word in words(text):
        own = AuditEvent.objects.alias(text=audit_search_text()).filter(text__icontains=word).order_by()
        via_request = AuditEvent.objects.filter(request__in=_matching_requests(word).values("pk")).order_by()
        qs = qs.filter(pk__in=own.values("pk").union(via_request.values("pk")))
    return qs


def identity_requests(qs: QuerySet[IdentityRequest], text: str) -> QuerySet[IdentityRequest]:
    """`qs` narrowed to requests with `text` (one string, any case) in the identity's name, namespace,
    ServiceAccount, a granted role or scope, or the requester's name or username. SearchError if it is too short."""
    if len(text) < MIN_CHARS:
        raise SearchError(f"Search for at least {MIN_CHARS} characters: a shorter text would read every identity.")
    people = User.objects.filter(Q(display_name__icontains=text) | Q(username__icontains=text)).order_by()
    by_requester = IdentityRequest.objects.filter(requester__in=people.values("pk")).order_by()
    by_grant = RoleGrant.objects.alias(text=grant_search_text()).filter(text__icontains=text).order_by()
    ids = _matching_requests(text).values("pk").union(by_requester.values("pk"), by_grant.values("request_id"))
    return qs.filter(pk__in=ids)
