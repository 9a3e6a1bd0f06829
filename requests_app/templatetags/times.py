"""`{{ value|when:"Y-m-d H:i" }}`: Django's `date` filter for the few formats the pages use, without its general
formatter (issue 13: ~14 µs a date, two per row, was a third of a 50-row table's rendering). Any other format,
or anything but a date, goes to Django's own filter. A builtin (settings.TEMPLATES): no `{% load %}` needed."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django import template
from django.template.defaultfilters import date as django_date

register = template.Library()

# Django's format -> strftime's, for the formats the templates use; "T" (the time zone's name) is added after.
STRFTIME = {
    "Y-m-d": "%Y-%m-%d",
    "Y-m-d H:i": "%Y-%m-%d %H:%M",
    "Y-m-d H:i:s": "%Y-%m-%d %H:%M:%S",
    "H:i:s": "%H:%M:%S",
}


@register.filter(expects_localtime=True, is_safe=False)
def when(value: Any, arg: str = "c") -> str:
    """`value` (already in the current time zone, as Django's `date` gets it) written as `arg` says."""
    if isinstance(value, date) and not isinstance(value, datetime) and arg in ("c", "Y-m-d"):
        return value.isoformat()  # a day
    if not isinstance(value, datetime):
        return django_date(value, arg)
    if arg == "c":
        return value.isoformat()
    fmt, zone = (arg[:-2], True) if arg.endswith(" T") else (arg, False)
    pattern = STRFTIME.get(fmt)
    if pattern is None:
        return django_date(value, arg)
    text = value.strftime(pattern)
    if zone:
        name = value.tzname() if value.tzinfo is not None else None
        return f"{text} {name}" if name is not None else django_date(value, arg)
    return text
