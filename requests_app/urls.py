"""The portal's URLs. Views live in requests_app/views/ (one module per area) and requests_app/auth/views.py."""

from django.urls import path

from . import ratelimits
from .auth import views as auth_views
from .views import admin_audit, approvals, drift, requests, revocation

urlpatterns = [
    path("", requests.home, name="home"),
    path("login/", ratelimits.signin(auth_views.login), name="login"),
    path("auth/callback", ratelimits.signin(auth_views.callback, methods=("GET",)), name="auth_callback"),
    path("logout/", auth_views.logout, name="logout"),
    path("requests/", requests.my_requests, name="my_requests"),
    path("requests/new/", ratelimits.submission(requests.new_request), name="new_request"),
    path("requests/<uuid:pk>/", requests.request_detail, name="request_detail"),
    path("requests/<uuid:pk>/status/", requests.request_status, name="request_status"),
    path("requests/<uuid:pk>/cancel/", requests.cancel, name="request_cancel"),
    path("requests/<uuid:pk>/retry/", requests.retry, name="request_retry"),
    path("requests/<uuid:pk>/revoke/", revocation.revoke, name="request_revoke"),
    path("requests/<uuid:pk>/verify/", revocation.verify_again, name="request_verify"),
    path("requests/<uuid:pk>/repair/", drift.repair, name="request_repair"),
    path("drift/", drift.drift_list, name="drift"),
    path("approvals/", approvals.queue, name="approvals"),
    path("approvals/<uuid:pk>/", approvals.decide, name="request_decide"),
    path("audit/", admin_audit.audit_log, name="audit"),
    path("audit.csv", admin_audit.audit_csv, name="audit_csv"),
]
