"""Filters that put numbers into words for people: `{{ retry_after|seconds_in_words }}` → "1 minute 5 seconds"."""

from __future__ import annotations

from django import template

from ..models import Status

register = template.Library()
# Read once: `get_status_display` builds the choices' dict anew on every call (issue 13: once per row).
STATUS_LABELS: dict[str, str] = dict(Status.choices)


@register.filter
def status_label(status: str) -> str:
    """A request's status as `get_status_display` words it ("Waiting for approval"); an unknown one as itself."""
    return STATUS_LABELS.get(status, status)


@register.filter
def seconds_in_words(seconds: int | str) -> str:
    """A wait of `seconds` as hours, minutes and seconds in words, leaving out the parts that are zero."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "hour"), (minutes, "minute"), (secs, "second")]
    words = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    return " ".join(words) or "0 seconds"
