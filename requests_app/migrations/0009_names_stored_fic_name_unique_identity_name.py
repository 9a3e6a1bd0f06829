"""Names that cannot collide: the federated credential's name is stored on the request, and no two active
requests share an identity name.

Requests made before this migration were named `<cluster>-<namespace>-<sa>`; their identities and credentials
exist in Azure under those names. Their identity name was already stored; their credential's name was derived
at run time, so it is filled here with that same old derivation (naming.legacy_fic_name), and provisioning,
revocation and drift use the stored value from now on. New requests get the injective names (naming.fic_name).

If two active requests already share an identity name (only a form check kept them apart, and two submissions
at once could pass it together), the constraint cannot be added: the migration stops and names them, because
they share one Azure identity and someone has to decide which one keeps it (revoke or cancel the other).
"""

from django.db import migrations, models

from requests_app.naming import legacy_fic_name

# ACTIVE_STATUSES as of this migration.
ACTIVE = ["submitted", "approved", "provisioning", "ready", "failed", "revoking"]


def fill_fic_names(apps, schema_editor):
    IdentityRequest = apps.get_model("requests_app", "IdentityRequest")
    for req in IdentityRequest.objects.select_related("cluster").only(
        "pk", "cluster__name", "namespace", "service_account"
    ):
        name = legacy_fic_name(req.cluster.name, req.namespace, req.service_account)
        IdentityRequest.objects.filter(pk=req.pk).update(fic_name=name)


def refuse_shared_identity_names(apps, schema_editor):
    IdentityRequest = apps.get_model("requests_app", "IdentityRequest")
    shared = (
        IdentityRequest.objects.filter(status__in=ACTIVE)
        .values("identity_name")
        .annotate(n=models.Count("pk"))
        .filter(n__gt=1)
        .values_list("identity_name", flat=True)
    )
    active = IdentityRequest.objects.filter(status__in=ACTIVE)
    clashes = {
        name: sorted(str(pk) for pk in active.filter(identity_name=name).values_list("pk", flat=True))
        for name in shared
    }
    if clashes:
        listed = "; ".join(f"{name}: requests {', '.join(pks)}" for name, pks in sorted(clashes.items()))
        raise RuntimeError(
            f"Active requests share an identity name, so the unique constraint cannot be added ({listed}). They "
            "share one Azure identity: revoke or cancel all but one of each, then migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("requests_app", "0008_audit_checkpoints_truncate_trigger"),
    ]

    operations = [
        migrations.AddField(
            model_name="identityrequest",
            name="fic_name",
            field=models.CharField(default="", max_length=120),
            preserve_default=False,
        ),
        migrations.RunPython(fill_fic_names, migrations.RunPython.noop),
        migrations.RunPython(refuse_shared_identity_names, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="identityrequest",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ACTIVE)),
                fields=("identity_name",),
                name="one_active_request_per_identity_name",
            ),
        ),
    ]
