from django.core.management.base import BaseCommand, CommandError

from requests_app import audit
from requests_app.models import AuditEvent


class Command(BaseCommand):
    help = "Check the audit log's hash chain; report any edited, deleted or reordered event (exit 1 if any)."

    def handle(self, *args, **options):
        problems = audit.verify_chain()
        if problems:
            for p in problems:
                self.stderr.write(p)
            raise CommandError(f"the audit log has been tampered with: {len(problems)} problem(s)")
        self.stdout.write(f"audit log intact: {AuditEvent.objects.count()} events, hash chain verified")
