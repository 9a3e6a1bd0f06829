"""The portal's URLs: its own (requests_app/urls.py), the Django admin and django-rq's dashboard.

The admin's and django-rq's views are wrapped where they are included: every POST rate limited per user
(requests_app/ratelimits.py); django-rq's answer 404 to ids that name nothing (portal/rq_pages.py, which also
replaces django-rq's admin integration: requests_app/admin.py).

Error pages (portal/errors.py): 403 and 404 in the portal's layout with the reason the code gave; 500 is
Django's own handler, which renders templates/500.html without a request.
"""

from django.contrib import admin
from django.urls import include, path
from django_rq import urls as django_rq_urls

from portal import rq_pages
from portal.wrapped_urls import wrap_views
from requests_app import ratelimits

handler403 = "portal.errors.forbidden"
handler404 = "portal.errors.not_found"
handler500 = "django.views.defaults.server_error"

admin_patterns, admin_app, admin_namespace = admin.site.urls

urlpatterns = [
    path("admin/", (wrap_views(admin_patterns, ratelimits.every_post("admin")), admin_app, admin_namespace)),
    path(
        "django-rq/",
        include((wrap_views(rq_pages.urlpatterns(), ratelimits.every_post("django-rq")), django_rq_urls.app_name)),
    ),
    path("", include("requests_app.observability.urls")),  # issue 12 health: /healthz, /readyz, /metrics
    path("api/v1/", include("requests_app.api.urls")),  # issue 12 api: the REST API (its own auth, tests/api)
    path("", include("requests_app.urls")),
]
