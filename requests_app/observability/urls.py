"""/healthz, /readyz, /metrics: answered by `middleware.ProbesAndMetrics` for GET and HEAD; routed here too, so
reverse() names them and any other method gets the portal's 405."""

from django.urls import path

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
]
