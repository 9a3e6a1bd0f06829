from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Workload identity requests"

    def ready(self) -> None:
        # issue 13 cheap: signing in is activity, so the idle stamp starts there and the first page writes nothing.
        from django.contrib.auth.signals import user_logged_in

        from portal.sessions import stamp_sign_in

        from . import checks  # noqa: F401  (registers the system checks)

        user_logged_in.connect(stamp_sign_in, dispatch_uid="portal.sessions.stamp_sign_in")
