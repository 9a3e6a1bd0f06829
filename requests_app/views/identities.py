"""The identities page: the ready identities of the clusters a user is DevOps for (every cluster for admins)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from portal.methods import serves

from .. import access, identities, keyset, refederation, search
from ..forms import PlainSelect

PAGE_SIZE = 25
ALL = [("", "All")]


class IdentityFilter(forms.Form):
    """The page's search box and filters; the choices are only what this user may list."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    cluster = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, widget=PlainSelect)
    namespace = forms.ChoiceField(required=False, widget=PlainSelect)
    role = forms.ChoiceField(required=False, widget=PlainSelect)

    def clean_q(self) -> str:
        text = self.cleaned_data["q"].strip()
        if 0 < len(text) < search.MIN_CHARS:  # issue 13: too short for the trigram index (requests_app/search.py)
            raise forms.ValidationError(f"Search for at least {search.MIN_CHARS} characters.")
        return text

    def __init__(self, data: dict, *, clusters: list, namespaces: list[str], roles: list[str]) -> None:
        super().__init__(data)
        self.fields["cluster"].choices = ALL + [(str(c.pk), str(c)) for c in clusters]
        self.fields["namespace"].choices = ALL + [(n, n) for n in namespaces]
        self.fields["role"].choices = ALL + [(r, r) for r in roles]


@serves("GET", "HEAD")
@login_required
def identity_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not access.can_list_identities(user):
        raise PermissionDenied(
            "The identities page is for the DevOps members of a cluster and for portal admins: you are neither."
        )
    allowed = access.listable_identities(user)
    clusters = list(access.identity_clusters(user))
    form = IdentityFilter(
        request.GET,
        clusters=clusters,
        namespaces=identities.namespaces(clusters),
        roles=identities.role_names(clusters),
    )
    # A filter that is not among the choices is reported on the page and left out; the rest still applies.
    form.is_valid()
    chosen = form.cleaned_data
    text = (chosen.get("q") or "").strip()
    found = identities.search(
        allowed,
        cluster=chosen.get("cluster"),
        namespace=chosen.get("namespace") or "",
        role=chosen.get("role") or "",
    )
    # issue 13: keyset pages on (listed_at, id), read in the order of an index: no OFFSET, no COUNT of thousands.
    cursor_error = ""
    try:
        page = identities.page(found, text, request.GET.get("cursor"), PAGE_SIZE)
    except keyset.BadCursor:
        page = identities.page(found, text, None, PAGE_SIZE)
        cursor_error = "That page link could not be read, so the newest identities are shown."
    filtered = any(request.GET.get(k) for k in IdentityFilter.base_fields)
    # issue 11: each listed cluster's pod-identity page, and its re-federation page when Azure reports a new issuer
    # (both open to exactly the users who may list the cluster; read from the rows loaded above, no query).
    cluster_links = [(c, bool(refederation.new_issuer(c))) for c in clusters]
    return render(
        request,
        "identities/list.html",
        {
            "form": form,
            "page": page,
            "filtered": filtered,
            "cursor_error": cursor_error,
            "page_size": PAGE_SIZE,
            "cluster_links": cluster_links,
        },
    )
