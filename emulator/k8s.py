"""Placeholder: routes are added by the k8s part."""

from typing import Any

from aiohttp import web


def setup(app: web.Application, emu: Any) -> None:
    pass
