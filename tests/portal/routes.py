"""Every URL pattern of `portal.urls` (the portal's views, the Django admin, django-rq's pages), each with concrete
paths made of made-up arguments that resolve to it.

    for route in every_route():
        route.route      # "requests/<uuid:pk>/", as Django's resolver reports it (ResolverMatch.route)
        route.paths      # ["/requests/6f1d2c3b-…/", …]: made-up ids, every combination of the candidates below
        route.view       # the view function the paths resolve to

A pattern no made-up argument can reach fails `every_route()` loudly instead of being skipped.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.converters import IntConverter, PathConverter, SlugConverter, StringConverter, UUIDConverter
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils.regex_helper import normalize

MADE_UP_UUID = "6f1d2c3b-0000-4000-8000-00000000dead"
# Made-up arguments by converter: ids that exist nowhere, and odd ones (negative, huge, not a number at all).
MADE_UP: dict[type, list[str]] = {
    UUIDConverter: [MADE_UP_UUID],
    IntConverter: ["0", "7", "987654321987654321"],
    StringConverter: ["made-up", "987654", "-1", "rq:worker:made-up"],  # the last: a worker key in its shape
    PathConverter: ["made-up", "987654", "made/up"],
    SlugConverter: ["made-up"],
}
# For regex groups (the admin's app index, django-rq's stats token): anything that might fit.
REGEX_CANDIDATES = ["made_up", "987654", "auth", "requests_app", "django_rq", "made-up"]


@dataclass(frozen=True)
class Route:
    route: str
    view: Any
    paths: tuple[str, ...]


def every_route() -> list[Route]:
    routes = []
    for route, patterns in _leaves(get_resolver().url_patterns, "", []):
        candidates = ["/" + "".join(parts) for parts in itertools.product(*(_fill(p) for p in patterns))]
        paths = tuple(p for p in dict.fromkeys(candidates) if _resolves_to(p, route))
        assert paths, f"no made-up path reaches {route!r}: add a candidate in tests/portal/routes.py"
        routes.append(Route(route=route, view=resolve(paths[0]).func, paths=paths))
    return routes


def _leaves(patterns: list[Any], route: str, chain: list[Any]) -> list[tuple[str, list[Any]]]:
    out = []
    for p in patterns:
        here = _join_route(route, str(p.pattern))
        if isinstance(p, URLResolver):
            out += _leaves(p.url_patterns, here, [*chain, p.pattern])
        elif isinstance(p, URLPattern):
            out.append((here, [*chain, p.pattern]))
    return out


def _join_route(first: str, second: str) -> str:
    # As django.urls.resolvers.URLResolver._join_route does, so routes compare with ResolverMatch.route.
    return second if not first else first + second.removeprefix("^")


def _fill(pattern: RoutePattern | RegexPattern) -> list[str]:
    """Concrete strings for one level of a URL pattern, every combination of made-up arguments."""
    if isinstance(pattern, RoutePattern):
        text = str(pattern)
        names = re.findall(r"<(?:\w+:)?(\w+)>", text)
        choices = [MADE_UP[type(pattern.converters[n])] for n in names]
        out = []
        for values in itertools.product(*choices):
            filled = text
            for value in values:
                filled = re.sub(r"<(?:\w+:)?\w+>", lambda _m, v=value: v, filled, count=1)
            out.append(filled)
        return out
    out = []
    for form, params in normalize(pattern.regex.pattern):
        for values in itertools.product(REGEX_CANDIDATES, repeat=len(params)):
            out.append(form % dict(zip(params, values, strict=True)))
    return out


def _resolves_to(path: str, route: str) -> bool:
    try:
        return resolve(path).route == route
    except Resolver404:
        return False
