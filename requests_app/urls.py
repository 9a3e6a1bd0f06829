"""The portal's URLs. Views live in requests_app/views/ (one module per area) and requests_app/auth/views.py.

Every view that changes something is rate limited here (requests_app/ratelimits.py).
"""

from django.urls import path

from . import ratelimits
from .auth import views as auth_views
from .views import (
    admin_audit,
    approvals,
    changes,
    drift,
    exports,  # issue 13 exports
    identities,
    lifecycle,
    moves,
    podidentity,
    refederation,
    requests,
    revocation,
)

urlpatterns = [
    path("", requests.home, name="home"),
    path("login/", ratelimits.signin(auth_views.login), name="login"),
    path("auth/callback", ratelimits.signin(auth_views.callback, methods=("GET",)), name="auth_callback"),
    path("logout/", ratelimits.action(auth_views.logout, group="sign_out"), name="logout"),
    path("requests/", requests.my_requests, name="my_requests"),
    path("requests/new/", ratelimits.submission(requests.new_request), name="new_request"),
    path("requests/new/scopes/", ratelimits.cloud_read(requests.scope_choices, group="scopes"), name="scope_choices"),
    path("requests/<uuid:pk>/", requests.request_detail, name="request_detail"),
    path("requests/<uuid:pk>/status/", requests.request_status, name="request_status"),
    path("requests/<uuid:pk>/cancel/", ratelimits.action(requests.cancel, group="cancel"), name="request_cancel"),
    path("requests/<uuid:pk>/retry/", ratelimits.action(requests.retry, group="retry"), name="request_retry"),
    path("requests/<uuid:pk>/revoke/", ratelimits.action(revocation.revoke, group="revoke"), name="request_revoke"),
    path(
        "requests/<uuid:pk>/verify/",
        ratelimits.cloud_action(revocation.verify_again, group="verify"),
        name="request_verify",
    ),
    path("requests/<uuid:pk>/repair/", ratelimits.cloud_action(drift.repair, group="repair"), name="request_repair"),
    # issue 11 changes: changing what a ready identity may do
    path("requests/<uuid:pk>/changes/new/", ratelimits.submission(changes.new_change), name="change_new"),
    path("requests/<uuid:pk>/changes/<int:change_pk>/", changes.change_detail, name="change_detail"),
    path(
        "requests/<uuid:pk>/changes/<int:change_pk>/decide/",
        ratelimits.action(changes.decide_change, group="decide"),
        name="change_decide",
    ),
    path(
        "requests/<uuid:pk>/changes/<int:change_pk>/cancel/",
        ratelimits.action(changes.cancel_change, group="cancel"),
        name="change_cancel",
    ),
    path(
        "requests/<uuid:pk>/changes/<int:change_pk>/retry/",
        ratelimits.action(changes.retry_change, group="retry"),
        name="change_retry",
    ),
    path("identities/", identities.identity_list, name="identities"),
    # issue 11 lifecycle: owners, expiry, re-confirmation, suspension
    path(
        "requests/<uuid:pk>/recertify/",
        ratelimits.action(lifecycle.recertify, group="recertify"),
        name="request_recertify",
    ),
    path("requests/<uuid:pk>/resume/", ratelimits.action(lifecycle.resume, group="resume"), name="request_resume"),
    path(
        "requests/<uuid:pk>/transfer/", ratelimits.action(lifecycle.transfer, group="transfer"), name="request_transfer"
    ),
    path("identities/expiring/", lifecycle.expiring, name="identities_expiring"),
    path("identities/recertification.csv", lifecycle.recertification_csv, name="recertification_csv"),
    path("drift/", ratelimits.cloud_action(drift.drift_list, group="reconcile"), name="drift"),
    path("approvals/", approvals.queue, name="approvals"),
    path("approvals/<uuid:pk>/", ratelimits.action(approvals.decide, group="decide"), name="request_decide"),
    # issue 11 re-federation
    path("clusters/<slug:name>/refederate/", refederation.overview, name="cluster_refederation"),
    path(
        "clusters/<slug:name>/refederate/start/",
        ratelimits.cloud_action(refederation.start, group="refederate"),
        name="cluster_refederation_start",
    ),
    path(
        "requests/<uuid:pk>/refederate/retry/",
        ratelimits.cloud_action(refederation.retry, group="refederate_retry"),
        name="request_refederation_retry",
    ),
    # issue 11 move: moving a workload to another cluster
    path("requests/<uuid:pk>/move/", ratelimits.submission(moves.new_move), name="move_new"),
    path(
        "requests/<uuid:pk>/moves/<int:move_pk>/decide/",
        ratelimits.action(moves.decide_move, group="decide"),
        name="move_decide",
    ),
    path(
        "requests/<uuid:pk>/moves/<int:move_pk>/cancel/",
        ratelimits.action(moves.cancel_move, group="cancel"),
        name="move_cancel",
    ),
    path(
        "requests/<uuid:pk>/moves/<int:move_pk>/retry/",
        ratelimits.action(moves.retry_move, group="retry"),
        name="move_retry",
    ),
    path("audit/", admin_audit.audit_log, name="audit"),
    path("audit.csv", admin_audit.audit_csv, name="audit_csv"),
    # issue 13 exports
    path("audit/exports/", ratelimits.action(exports.export_list, group="export"), name="audit_exports"),
    path("audit/exports/<int:pk>/download/", exports.export_download, name="audit_export_download"),
    path("audit/exports/status/", exports.export_status, name="audit_exports_status"),  # issue 13 exports ops
    # issue 11 podid: moving from aad-pod-identity
    path(
        "clusters/<slug:name>/pod-identity/",
        ratelimits.cloud_read(podidentity.cluster_pod_identity, group="podid"),
        name="cluster_pod_identity",
    ),
    path(
        "clusters/<slug:name>/pod-identity/adopt/",
        ratelimits.cloud_action(podidentity.adopt, group="adopt"),
        name="pod_identity_adopt",
    ),
]
