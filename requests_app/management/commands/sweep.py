from django.core.management.base import BaseCommand

from requests_app import sweeping


class Command(BaseCommand):
    help = "Re-enqueue requests whose work is due (lost jobs, expired leases). Run once."

    def handle(self, *args, **options):
        self.stdout.write(f"re-enqueued {sweeping.sweep()} request(s)")
