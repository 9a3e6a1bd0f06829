from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from requests_app import audit, audit_keys, checkpoints
from requests_app.models import AuditChainHead, AuditCheckpoint, AuditEvent
from requests_app.observability import metrics


class Command(BaseCommand):
    help = (
        "Check the audit log's hash chains and the database against the signed checkpoints; report any edited, "
        "deleted, reordered or rewritten event (exit 1 if any)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoints",
            default=None,
            help="the checkpoint file (JSON lines); default PORTAL_AUDIT_CHECKPOINT_FILE",
        )
        parser.add_argument(
            "--key",
            action="append",
            default=[],
            help="a key whose checkpoints are trusted (Key Vault key URL or PEM file); repeatable; "
            "default PORTAL_AUDIT_SIGNING_KEY",
        )

    def handle(self, *args, **options):
        problems = audit.verify_chain()
        notes: list[str] = []
        path = options["checkpoints"] or settings.PORTAL_AUDIT_CHECKPOINT_FILE
        if not path:
            notes.append(
                "no checkpoint file (PORTAL_AUDIT_CHECKPOINT_FILE or --checkpoints): only the hash chains were "
                "checked, and a consistent rewrite passes it"
            )
        elif not Path(path).exists():
            problems.append(f"the checkpoint file {path} does not exist")
        else:
            report = self._against_checkpoints(path, options["key"])
            problems += report.problems
            notes += report.notes
        for n in notes:
            self.stdout.write(n)
        if problems:
            # Counted where this process's metrics reach Prometheus (PROMETHEUS_MULTIPROC_DIR shared with the web).
            metrics.AUDIT_CHECKPOINT_FAILURES.labels("verify").inc()
            for p in problems:
                self.stderr.write(p)
            raise CommandError(f"the audit log has been tampered with: {len(problems)} problem(s)")
        events, chains = AuditEvent.objects.count(), AuditChainHead.objects.filter(seq__gt=0).count()
        self.stdout.write(f"audit log intact: {events} events in {chains} chain(s), hash chains verified")

    def _against_checkpoints(self, path: str, keys: list[str]) -> checkpoints.Report:
        lines = checkpoints.read_lines(path)
        if not lines:
            report = checkpoints.Report()
            recorded = AuditCheckpoint.objects.count()
            if recorded:
                report.problems.append(f"the database records {recorded} checkpoint(s), but {path} holds none")
            else:
                report.notes.append(f"{path} holds no checkpoint yet")
            return report
        specs = keys or ([settings.PORTAL_AUDIT_SIGNING_KEY] if settings.PORTAL_AUDIT_SIGNING_KEY else [])
        if not specs:
            raise CommandError("no key to check the checkpoints' signatures with (PORTAL_AUDIT_SIGNING_KEY or --key)")
        try:
            signers = [audit_keys.signer_for(s) for s in specs]
        except audit_keys.SigningError as e:
            raise CommandError(str(e)) from e
        return checkpoints.verify_checkpoints(lines, signers)
