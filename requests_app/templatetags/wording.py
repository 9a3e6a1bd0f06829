"""Filters that put numbers into words for people: `{{ retry_after|seconds_in_words }}` → "1 minute 5 seconds"."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def seconds_in_words(seconds: int | str) -> str:
    """A wait of `seconds` as hours, minutes and seconds in words, leaving out the parts that are zero."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "hour"), (minutes, "minute"), (secs, "second")]
    words = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    return " ".join(words) or "0 seconds"
