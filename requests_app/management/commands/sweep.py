from django.core.management.base import BaseCommand

from requests_app import sweeping


class Command(BaseCommand):
    help = "Enqueue the outbox and re-enqueue requests whose work is due (lost jobs, expired leases). Run once."

    def handle(self, *args, **options):
        self.stdout.write(f"enqueued {sweeping.sweep()} (outbox jobs and requests due)")
