import sys
import uuid

from django.core.management.base import BaseCommand, CommandError

from requests_app import drift
from requests_app.models import DriftFinding, IdentityRequest

# Exit codes, for cron and CI: 0 no open drift; 1 open drift remains; 2 no drift seen, but some requests
# could not be checked (the cloud was unreachable for them).
DRIFT, UNCHECKED = 1, 2


class Command(BaseCommand):
    help = (
        "Compare ready identities with Azure and their clusters now, record drift, print a summary. "
        "Exits 1 if open drift remains, 2 if some requests could not be checked."
    )

    def add_arguments(self, parser):
        parser.add_argument("--request", type=uuid.UUID, help="Only this request (its ID).")

    def handle(self, *args, **options):
        ids = None
        if options["request"]:
            if not IdentityRequest.objects.filter(pk=options["request"]).exists():
                raise CommandError(f"No request {options['request']}.")
            ids = [options["request"]]
        summary = drift.reconcile_all(ids)
        out = self.stdout
        out.write(f"requests checked: {summary.checked}")
        if summary.skipped:
            out.write(f"requests skipped (being repaired): {summary.skipped}")
        for request_id, message in summary.errors:
            out.write(f"could not check {request_id}: {message}")
        for name, message in summary.cluster_errors:
            out.write(f"could not check cluster {name}: {message}")
        for name in summary.clusters_drifted:
            out.write(f"cluster {name}: its connection differs from Azure (see the cluster in the admin)")
        out.write(f"open findings: {summary.open_total}")
        for kind, count in summary.open_by_kind.items():
            out.write(f"  {kind}: {count}")
        findings = DriftFinding.objects.filter(resolved_at__isnull=True).select_related("request__cluster")
        if ids is not None:
            findings = findings.filter(request_id__in=ids)
        for f in findings.order_by("request__created_at", "kind", "key"):
            out.write(f"  {f.request_id} {f.request}: {f.kind} {f.key}")
        if summary.open_total:
            sys.exit(DRIFT)
        if summary.errors or summary.cluster_errors:
            sys.exit(UNCHECKED)
