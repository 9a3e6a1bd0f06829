import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from requests_app import audit_keys, checkpoints, drift, exports, lifecycle, sweeping

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "The periodic work: sweep every PORTAL_SWEEP_SECONDS, reconcile every PORTAL_RECONCILE_SECONDS, sign an "
        "audit checkpoint every PORTAL_AUDIT_CHECKPOINT_SECONDS when the chain head moved; queue a job per identity "
        "with an expiry reminder, suspension or revocation after grace due every PORTAL_LIFECYCLE_SECONDS, and a "
        "job per requester to see whether they left Entra every PORTAL_OWNER_CHECK_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="do each piece of work once, then exit")

    def handle(self, *args, **options):
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        if not options["once"]:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        signer = audit_keys.configured_signer()
        if signer is None:
            log.warning("scheduler: PORTAL_AUDIT_SIGNING_KEY is not set, so no audit checkpoints are signed")
        next_sweep = next_reconcile = next_checkpoint = time.monotonic()
        next_lifecycle = next_owner_check = next_sweep  # issue 11 lifecycle
        next_sweep_exports = next_sweep
        while not stopping:
            now = time.monotonic()
            if now >= next_sweep:
                self._safely(sweeping.sweep)
                next_sweep = now + settings.PORTAL_SWEEP_SECONDS
            if now >= next_reconcile:
                self._safely(drift.enqueue_reconcile_all)
                next_reconcile = now + settings.PORTAL_RECONCILE_SECONDS
            if now >= next_lifecycle:  # issue 11 lifecycle
                self._safely(lifecycle.enqueue_due)  # jobs do the work: no cloud call in the scheduler
                next_lifecycle = now + settings.PORTAL_LIFECYCLE_SECONDS
            if now >= next_sweep_exports:  # issue 13 exports: files and rows past PORTAL_EXPORT_DAYS
                self._safely(exports.expire)
                next_sweep_exports = now + settings.PORTAL_SWEEP_SECONDS
            if now >= next_owner_check:
                self._safely(lifecycle.enqueue_requester_checks)
                next_owner_check = now + settings.PORTAL_OWNER_CHECK_SECONDS
            if signer is not None and now >= next_checkpoint:
                self._safely(lambda: checkpoints.checkpoint_if_moved(signer))
                next_checkpoint = now + settings.PORTAL_AUDIT_CHECKPOINT_SECONDS
            if options["once"]:
                break
            time.sleep(0.5)

    @staticmethod
    def _safely(fn):
        # One bad round (database restarting, Redis away) must not end the scheduler.
        try:
            fn()
        except Exception:
            log.exception("scheduler: %s failed", getattr(fn, "__name__", fn))
