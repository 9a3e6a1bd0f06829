"""The portal's URLs plus views that fail on purpose, for the error-page tests (settings.ROOT_URLCONF = this).

The handlers are looked up on the root URLconf, so they are the portal's own, re-exported."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path

from portal.urls import handler403, handler404, handler500, urlpatterns

SECRET = "db-password-hunter2"


def not_an_approver(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("You are not an approver")


def no_such_request(request: HttpRequest) -> HttpResponse:
    raise Http404("No such request.")


def no_such_group(request: HttpRequest) -> HttpResponse:
    get_object_or_404(Group, pk=987654)  # Django's message names the model: not for the page
    return HttpResponse()


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(f"connection to {SECRET}@db failed")


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("boom/403/", not_an_approver),
    path("boom/404/", no_such_request),
    path("boom/404-django/", no_such_group),
    path("boom/500/", crash),
    path("boom/form/", form),
    *urlpatterns,
]
__all__ = ["handler403", "handler404", "handler500", "urlpatterns"]
