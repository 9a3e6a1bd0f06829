"""django-rq's dashboard, at /django-rq/ and inside the Django admin, answering 404 (not 500) to ids that name
nothing.

django-rq looks up what a URL names and lets the failure escape: a queue, scheduler or connection index past the
configured queues (IndexError), a job that does not exist (NoSuchJobError), a worker key that is not one
(ValueError) or names no worker (its view asserts it found one), a scheduler page without rq-scheduler, which
the portal does not install (ImproperlyConfigured). `not_found_for_made_up_ids` wraps each of its views and turns
those into 404. They are raised after django-rq's own staff check, so the signed-out still go to sign in.

In the admin, django-rq registers a model without a table for its dashboard; the admin's change, delete and
history pages for it would query that table. `DashboardAdmin` keeps only django-rq's pages and the dashboard.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern
from django_rq import urls as django_rq_urls
from django_rq.admin import QueueAdmin
from rq.exceptions import NoSuchJobError

from portal.wrapped_urls import wrap_views

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
LOOKUP_ERRORS = (IndexError, NoSuchJobError, ValueError, AssertionError, ImproperlyConfigured)


def not_found_for_made_up_ids(view: View) -> View:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except LOOKUP_ERRORS as e:
            # Logged, so that a real fault caught here still shows; the page says only what is true for the user.
            log.warning("django-rq page %s names nothing: %s: %s", request.path, type(e).__name__, e)
            raise Http404("Nothing here: no such queue, job, worker or scheduler.") from e

    return wrapped


def urlpatterns() -> list[Any]:
    """django-rq's URLs for include(), every view wrapped."""
    return wrap_views(django_rq_urls.urlpatterns, not_found_for_made_up_ids)


class DashboardAdmin(QueueAdmin):
    """django-rq's admin integration: its pages (wrapped) and the dashboard, no change/delete/history pages."""

    def get_urls(self) -> list[URLPattern]:
        model = f"{self.opts.app_label}_{self.opts.model_name}"
        rowless = {f"{model}_{page}" for page in ("add", "change", "delete", "history")}
        # The unnamed one is the admin's old-style redirect from <id>/ to <id>/change/.
        kept = [u for u in super().get_urls() if u.name and u.name not in rowless]
        return wrap_views(kept, not_found_for_made_up_ids)
