"""`|when:` (requests_app/templatetags/times.py) writes what Django's `|date:` writes, for every format the
templates use and for values of every kind, in a time zone that is not UTC; `|status_label` words a status as
`get_status_display` does (issue 13: both cheaper per row)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from django.template import engines
from django.utils import timezone

from requests_app.models import IdentityRequest, Status
from requests_app.templatetags.wording import status_label

FORMATS = ["c", "Y-m-d H:i:s T", "Y-m-d H:i", "Y-m-d", "Y-m-d H:i T", "Y-m-d H:i:s", "H:i:s T", "D, j M Y"]
VALUES = [
    datetime(2026, 7, 1, 22, 30, 5, 123456, tzinfo=UTC),  # summer time, and the next day in Amsterdam
    datetime(2026, 1, 15, 8, 0, tzinfo=UTC),
    datetime(2026, 1, 15, 8, 0),  # naive
    date(2026, 2, 28),
    None,
    "",
]


def render(source: str, value: object) -> str:
    try:
        return engines["django"].from_string(source).render({"v": value})
    except TypeError as e:  # Django's own answer to a time format for a day: the same from both
        return f"TypeError: {e}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_when_writes_what_date_writes(fmt, value):
    with timezone.override("Europe/Amsterdam"):
        assert render(f'{{{{ v|when:"{fmt}" }}}}', value) == render(f'{{{{ v|date:"{fmt}" }}}}', value)


def test_the_pages_use_when_for_every_date():
    root = Path(__file__).resolve().parents[2] / "templates"
    pages = [p for p in root.rglob("*.html") if "emails" not in p.parts]
    assert pages and not [str(p) for p in pages if "|date:" in p.read_text(encoding="utf-8")]


def test_status_label_words_every_status_as_django_does():
    for status in Status.values:
        assert status_label(status) == IdentityRequest(status=status).get_status_display()
