import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from requests_app import sweeping

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "The periodic work: sweep every PORTAL_SWEEP_SECONDS, reconcile every PORTAL_RECONCILE_SECONDS."

    def handle(self, *args, **options):
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        next_sweep = next_reconcile = time.monotonic()
        while not stopping:
            now = time.monotonic()
            if now >= next_sweep:
                self._safely(sweeping.sweep)
                next_sweep = now + settings.PORTAL_SWEEP_SECONDS
            if now >= next_reconcile:
                self._safely(self._reconcile)
                next_reconcile = now + settings.PORTAL_RECONCILE_SECONDS
            time.sleep(0.5)

    def _reconcile(self):
        try:
            from requests_app import drift
        except ImportError:  # drift detection arrives with its own module
            return
        drift.enqueue_reconcile_all()

    @staticmethod
    def _safely(fn):
        # One bad round (database restarting, Redis away) must not end the scheduler.
        try:
            fn()
        except Exception:
            log.exception("scheduler: %s failed", getattr(fn, "__name__", fn))
