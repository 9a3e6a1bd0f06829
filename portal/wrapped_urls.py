"""Wrap every view of an app's URL patterns (the Django admin's, django-rq's) without changing its URLs: the same
patterns, names, namespaces and arguments, each view passed through `wrapper`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, URLResolver

View = Callable[..., Any]


def wrap_views(patterns: list[URLPattern | URLResolver], wrapper: Callable[[View], View]) -> list[Any]:
    wrapped: list[Any] = []
    for p in patterns:
        if isinstance(p, URLResolver):
            inner = wrap_views(p.url_patterns, wrapper)
            wrapped.append(URLResolver(p.pattern, inner, p.default_kwargs, p.app_name, p.namespace))
        else:
            wrapped.append(URLPattern(p.pattern, wrapper(p.callback), p.default_args, p.name))
    return wrapped
