from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Workload identity requests"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
