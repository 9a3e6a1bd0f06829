from django.core.management.base import BaseCommand, CommandError

from requests_app import clusters
from requests_app.cloud.errors import CloudError


class Command(BaseCommand):
    help = "Register or update clusters and their role catalogue from a YAML file (${VAR} from the environment)."

    def add_arguments(self, parser):
        parser.add_argument("path")

    def handle(self, *args, path: str, **options):
        try:
            loaded = clusters.load_file(path)
        except (OSError, clusters.ClusterConfigError, CloudError) as e:
            raise CommandError(str(e)) from e
        for c in loaded:
            self.stdout.write(f"{c.name}: issuer {c.oidc_issuer_url}, {c.roles.count()} roles")
