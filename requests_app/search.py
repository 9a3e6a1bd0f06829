"""Free-text search for the audit log and the identities page (issue 13): answered from trigram indexes.

`text__icontains` over each table's search expression (models.audit_search_text, request_search_text,
grant_search_text) compiles on PostgreSQL to `UPPER(<expression>) LIKE UPPER('%word%')`, the very expression
migration 0029 indexes with gin_trgm_ops, so a search reads the index's matches instead of every row. A word
shorter than MIN_CHARS has no trigram to look up: it is refused with a message (SearchError), never run as a scan.
Matches in other tables come in through their own index and a UNION of ids, not an OR over a join (which
PostgreSQL can only answer by reading every row). On SQLite the same queries are plain icontains.

The identities page wants only a page of the newest matches, and a common word (in every grant's scope, say)
has tens of thousands: finding and sorting them all costs hundreds of ms. So its page (first_identities) asks the
trigram indexes (the page's filters ANDed into each branch) for at most CAP+1 matches: CAP or fewer are every
match, and the page is picked from their ids and keys. More: the word is common, and its page is looked for in the
WINDOW newest rows from the cursor, in index order, each tested by a per-row expression; only if fewer than a page
match there are all its matches sorted, ids and keys alone. Same rows, same order, same pages as the indexes alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery, Value, prefetch_related_objects
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.db.models.lookups import IContains

from .models import (
    AuditEvent,
    IdentityRequest,
    RoleGrant,
    User,
    audit_search_text,
    grant_search_text,
    request_search_text,
)

# Rows a common word's page is looked for in, each tested one by one (~5 ms on the bench database): a word in more
# than CAP identities is in one row in ten of them, and fills a page there.
WINDOW = 250
# Matches the identities search takes from the trigram indexes before it calls a word common (~10 ms for 2,000 on
# the bench database; `app-1`'s ~1,600 fit). More: its page is the first of them in the newest WINDOW rows.
CAP = 2000
FAR_PAST, FAR_FUTURE = datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)
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


def _identity_text(text: str) -> str:
    if len(text) < MIN_CHARS:
        raise SearchError(f"Search for at least {MIN_CHARS} characters: a shorter text would read every identity.")
    return text


def _identity_ids(qs: QuerySet[IdentityRequest], text: str, *also: str, every: bool = False) -> QuerySet:
    # Each branch carries qs's filters, so PostgreSQL can AND its trigram bitmap with theirs (cluster, status) and
    # fetch only the rows both hold: a word in every tenth identity costs ~15 ms, not the ~60 ms of all its matches.
    base = qs.order_by()
    people = User.objects.filter(Q(display_name__icontains=text) | Q(username__icontains=text)).order_by()
    grants = RoleGrant.objects.alias(text=grant_search_text()).filter(text__icontains=text).order_by()
    own = base.filter(IContains(request_search_text(), text))
    by_requester = base.filter(requester__in=people.values("pk"))
    by_grant = base.filter(pk__in=grants.values("request_id"))
    columns = ("id", *also)
    return own.values(*columns).union(by_requester.values(*columns), by_grant.values(*columns), all=every)


def identity_requests(qs: QuerySet[IdentityRequest], text: str) -> QuerySet[IdentityRequest]:
    """`qs` narrowed to requests with `text` (one string, any case) in the identity's name, namespace,
    ServiceAccount, a granted role or scope, or the requester's name or username. SearchError if it is too short."""
    return qs.filter(pk__in=_identity_ids(qs, _identity_text(text)))


def identity_match(text: str) -> Q:
    """The same test as identity_requests, row by row: for rows already found some other way (an index in their
    order), where testing each one costs less than finding every match."""
    grants = RoleGrant.objects.alias(text=grant_search_text()).filter(request=OuterRef("pk"), text__icontains=text)
    return (
        Q(IContains(request_search_text(), text))
        | Q(requester__display_name__icontains=text)
        | Q(requester__username__icontains=text)
        | Q(Exists(grants))
    )


def first_identities(ordered: QuerySet[IdentityRequest], n: int, *, text: str) -> list[IdentityRequest]:
    """The first `n` rows of `ordered` (filtered, bounded by the page's cursor and ordered by keyset.page, either
    way) that match `text`, as identity_requests finds them. SearchError for a text too short."""
    _identity_text(text)
    first = str(ordered.query.order_by[0])  # "-listed_at" newest first, "listed_at" for a page of newer rows
    key, newest_first = first.lstrip("-"), first.startswith("-")
    quote = connection.ops.quote_name
    order = ", ".join(f"{quote(f.lstrip('-'))} {'DESC' if f[0] == '-' else 'ASC'}" for f in ordered.query.order_by)
    # First the trigram indexes, at most CAP+1 matches (UNION ALL: the LIMIT stops the scans; a union would read
    # them all to drop repeats), counted, and the first n of them picked in the database (a thousand keys read
    # into Python cost more than the query). CAP or fewer found: those are every match.
    matches, params = _identity_ids(ordered, text, key, every=True).query.sql_with_params()
    # Django's own SQL and parameters, our column names and ints: nothing typed reaches the text.
    capped = f"SELECT m.*, COUNT(*) OVER () AS found FROM (SELECT * FROM ({matches}) u LIMIT {int(CAP) + 1}) m"  # noqa: S608  # nosec B608
    pick = f"SELECT DISTINCT c.id, c.{quote(key)}, c.found FROM ({capped}) c ORDER BY {order} LIMIT {int(n)}"  # noqa: S608  # nosec B608
    with connection.cursor() as cursor:
        cursor.execute(pick, params)
        picked = cursor.fetchall()
    if not picked:
        return []
    if picked[0][2] <= CAP:
        return list(ordered.filter(pk__in=[row[0] for row in picked])[:n])
    # More: a common word. The window: the rows up to the WINDOW-th one's key, a range of the listing index read
    # in its order, each row tested. Any match after it comes after every row in it, so n matches in the window
    # are the first n. Fewer than WINDOW rows in all: no edge, the window is every row, and holds every match.
    edge = Subquery(ordered.values(key)[WINDOW - 1 : WINDOW])
    if newest_first:
        window = ordered.filter(**{f"{key}__gte": Coalesce(edge, Value(FAR_PAST))})
    else:
        window = ordered.filter(**{f"{key}__lte": Coalesce(edge, Value(FAR_FUTURE))})
    # Their grants are read (prefetched) only once the rows are the answer, not for rows thrown away.
    rows = list(window.annotate(window_edge=edge).filter(identity_match(text)).prefetch_related(None)[:n])
    if len(rows) == n or (rows and rows[0].window_edge is None):
        prefetch_related_objects(rows, *ordered._prefetch_related_lookups)
        return rows
    # Fewer: a word common only further back. Every match's id and key, the first n picked in a derived table:
    # joined with whole rows, PostgreSQL would read every row of the cluster to join its thousands of matches.
    matches, params = _identity_ids(ordered, text, key).query.sql_with_params()
    first_n = f"SELECT m.id FROM ({matches}) m ORDER BY {order} LIMIT {int(n)}"  # noqa: S608  # nosec B608
    return list(ordered.filter(pk__in=RawSQL(first_n, params))[:n])  # noqa: S611  # nosec B611
