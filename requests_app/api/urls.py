"""/api/v1/ (included from portal/urls.py)."""

from typing import Any

from django.urls import path

from . import views


def api(cls: Any) -> Any:
    """The view, noting the methods it serves for portal.methods (its 405s name them; a GET serves HEAD too)."""
    view = cls.as_view()
    view.http_methods = tuple(m for m in ("GET", "HEAD", "POST") if hasattr(cls, "get" if m == "HEAD" else m.lower()))
    return view


urlpatterns = [
    path("schema/", api(views.Schema), name="api_schema"),
    path("requests/", api(views.RequestList), name="api_requests"),
    path("requests/<uuid:pk>/", api(views.RequestDetail), name="api_request"),
    path("requests/<uuid:pk>/approve/", api(views.Approve), name="api_approve"),
    path("requests/<uuid:pk>/reject/", api(views.Reject), name="api_reject"),
    path("requests/<uuid:pk>/cancel/", api(views.Cancel), name="api_cancel"),
    path("requests/<uuid:pk>/retry/", api(views.Retry), name="api_retry"),
    path("requests/<uuid:pk>/revoke/", api(views.Revoke), name="api_revoke"),
    path("requests/<uuid:pk>/outputs/", api(views.Outputs), name="api_outputs"),
    path("requests/<uuid:pk>/changes/", api(views.Change), name="api_change"),
    path("requests/<uuid:pk>/recertify/", api(views.Recertify), name="api_recertify"),
    path("clusters/<slug:name>/identities/", api(views.ClusterIdentities), name="api_cluster_identities"),
    path("audit/", api(views.AuditLog), name="api_audit"),
]
