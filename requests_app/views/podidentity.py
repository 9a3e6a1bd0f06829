"""Moving from aad-pod-identity (issue 11 podid): a cluster's AzureIdentity objects and what replaces each, and the
prefilled request that adopts one's managed identity. The logic is in requests_app/adoption.py."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import access, adoption, audit, workflow
from ..cloud.errors import CloudError
from ..models import Cluster


def _cluster_for_devops(request: HttpRequest, name: str) -> Cluster:
    cluster = get_object_or_404(Cluster, name=name)
    if not (request.user.is_portal_admin or access.is_devops_member(request.user, cluster)):
        raise PermissionDenied(
            f"The pod identity page of {cluster} is for its DevOps members and for portal admins: you are neither."
        )
    return cluster


@serves("GET", "HEAD")
@login_required
def cluster_pod_identity(request: HttpRequest, name: str) -> HttpResponse:
    cluster = _cluster_for_devops(request, name)
    found = adoption.read_cluster(cluster)
    return render(request, "podidentity/cluster.html", {"cluster": cluster, "found": found})


class AdoptForm(forms.Form):
    service_account = forms.CharField(
        max_length=253,
        label="ServiceAccount",
        help_text="The pods' ServiceAccount: the federated credential trusts system:serviceaccount:<namespace>:<this>.",
    )
    purpose = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000, label="Purpose")


@serves("GET", "HEAD", "POST")
@login_required
def adopt(request: HttpRequest, name: str) -> HttpResponse:
    """GET ?namespace=&identity=&service_account=: the prefilled request; POST: submit it (for approval)."""
    cluster = get_object_or_404(Cluster, name=name)
    source = request.POST if request.method == "POST" else request.GET
    namespace, identity = source.get("namespace", ""), source.get("identity", "")
    if not access.can_request_in(request.user, cluster, namespace):
        raise PermissionDenied(
            f"Only members of the Entra group that owns {namespace or 'the namespace'} on {cluster} (and admins) "
            "can ask for identities there."
        )
    context: dict = {"cluster": cluster, "namespace": namespace, "identity": identity}
    try:
        migration = adoption.find_migration(cluster, namespace, identity)
        ident = adoption.check_adoptable(cluster, migration.identity.resource_id)
        assignments = adoption.existing_assignments(cluster, ident)
    except (adoption.AdoptionError, CloudError) as e:
        context["problem"] = getattr(e, "message", None) or str(e)
        return render(request, "podidentity/adopt.html", context, status=200)
    context |= {"migration": migration, "ident": ident, "assignments": assignments}
    context["reasons"] = adoption.risk_reasons(ident, assignments)
    if request.method != "POST":
        initial = {"service_account": source.get("service_account") or next(iter(migration.service_accounts), "")}
        context["form"] = AdoptForm(initial=initial)
        return render(request, "podidentity/adopt.html", context)
    form = AdoptForm(request.POST)
    context["form"] = form
    if not form.is_valid():
        return render(request, "podidentity/adopt.html", context)
    try:
        req = adoption.submit_adoption(
            requester=request.user,
            cluster=cluster,
            namespace=namespace,
            service_account=form.cleaned_data["service_account"],
            purpose=form.cleaned_data["purpose"],
            azure_identity=identity,
            source_ip=audit.client_ip(request),
        )
    except workflow.WorkflowError as e:
        form.add_error(None, str(e))
        return render(request, "podidentity/adopt.html", context)
    messages.success(request, f"Request submitted: it adopts {req.identity_name} once approved.")
    return redirect("request_detail", pk=req.pk)
