from django.core.management.base import BaseCommand, CommandError

from requests_app import audit_keys, checkpoints


class Command(BaseCommand):
    help = "Sign the audit chain heads now and write the checkpoint out (the log and PORTAL_AUDIT_CHECKPOINT_FILE)."

    def handle(self, *args, **options):
        signer = audit_keys.configured_signer()
        if signer is None:
            raise CommandError("PORTAL_AUDIT_SIGNING_KEY is not set: there is no key to sign checkpoints with")
        try:
            checkpoint = checkpoints.write_checkpoint(signer)
        except checkpoints.CheckpointRefused as e:
            for p in e.problems:
                self.stderr.write(p)
            raise CommandError("not signed: the audit log no longer extends the last checkpoint (tampered?)") from e
        except audit_keys.SigningError as e:
            raise CommandError(f"not signed: {e}") from e
        except OSError as e:
            raise CommandError(f"not written: {e}") from e
        if checkpoint is None:
            raise CommandError("another checkpoint was written at the same moment; run it again")
        self.stderr.write(
            f"checkpoint {checkpoint['n']} signed by {checkpoint['kid']}: {checkpoint['heads']['count']} chain(s), "
            f"{len(checkpoint['chains'])} moved since the last checkpoint"
        )
