"""The time sign-in, role freshness and session lifetime go by: one seam, so tests move time instead of sleeping.

Tests replace `now` (monkeypatch.setattr(clock, "now", ...)); everything here calls `clock.now()` at use.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
