"""Placeholder: routes are added by the arm part."""

from typing import Any

from aiohttp import web


def setup(app: web.Application, emu: Any) -> None:
    pass
