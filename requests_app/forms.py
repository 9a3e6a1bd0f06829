"""Forms of the portal: the identity request (with its role-grant rows), the approval decision, audit filters.

Validation is all server-side; the browser script only helps. A request is validated as a whole
(`RequestSubmission`) because a grant is only valid for the chosen cluster's catalogue and subscriptions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Q
from django.http import QueryDict
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from . import access, adoption, events, naming, policy, search, workflow
from .models import AllowedRole, Cluster, IdentityRequest, Step, User

AUDIENCE = "api://AzureADTokenExchange"
GRANTS_PREFIX = "grants"
MAX_GRANTS = 20
# What approvers read: long enough for a paragraph, short enough to read in the queue.
PURPOSE_MAX_LENGTH = 2000
# A request in one of these can be copied into a new one (GET /requests/new/?from=<id>).
COPYABLE_STATUSES = ("rejected", "cancelled", "revoked")
# The label provisioning puts on ServiceAccounts it creates (shown on the review page).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


# ---- what a request will create ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Exactly what provisioning will create for a request: shown on review, approval and request pages."""

    cluster: Cluster
    namespace: str
    service_account: str
    grants: list[tuple[str, str]]  # (role name, scope)
    # Why it is high-risk (empty: normal risk), what it takes to approve, and the approvals so far.
    risk_reasons: list[str] = field(default_factory=list)
    approval_needs: str = ""
    approval_progress: str = ""
    approvals: list[Any] = field(default_factory=list)
    # A request's stored names (Plan.of); blank: derived, as a new request will get them.
    identity_name: str = ""
    fic_name: str = ""
    # issue 11 podid: the adopted identity's resource ID (blank: the portal makes one), and the grants it had
    # already (kept as they are: never made nor removed by the portal).
    adopted_identity_resource_id: str = ""
    adopted_grants: frozenset[tuple[str, str]] = frozenset()

    def __post_init__(self) -> None:
        c, ns, sa = self.cluster.name, self.namespace, self.service_account
        if not self.identity_name:
            object.__setattr__(self, "identity_name", naming.identity_name(c, ns, sa))
        if not self.fic_name:
            object.__setattr__(self, "fic_name", naming.fic_name(c, ns, sa))

    @property
    def issuer(self) -> str:
        return self.cluster.oidc_issuer_url

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def audience(self) -> str:
        return AUDIENCE

    @property
    def managed_by_label(self) -> str:
        return MANAGED_BY_LABEL

    @property
    def devops_reader(self) -> bool:
        """issue 11 reader: whether provisioning also gives the DevOps group Reader on the identity."""
        return bool(self.cluster.devops_reader_on_identities and self.cluster.devops_group_id)

    @property
    def high_risk(self) -> bool:
        return bool(self.risk_reasons)

    # issue 11 podid
    @property
    def adopted(self) -> bool:
        return bool(self.adopted_identity_resource_id)

    @property
    def identity_place(self) -> tuple[str, str]:
        """(subscription, resource group) of the identity: the adopted one's, or the cluster's."""
        parts = adoption.parse_identity_id(self.adopted_identity_resource_id) if self.adopted else None
        if parts:
            return parts[0], parts[1]
        return self.cluster.subscription_id, self.cluster.resource_group

    @property
    def grant_rows(self) -> list[tuple[str, str, bool]]:
        """(role name, scope, adopted) of each grant."""
        return [(role, scope, (role, scope) in self.adopted_grants) for role, scope in self.grants]

    @classmethod
    def of(cls, req: IdentityRequest) -> Plan:
        rows = list(req.grants.all())  # issue 13 perflist: one queryset, not two
        grants = [(g.role_name, g.scope) for g in rows]
        adopted = frozenset((g.role_name, g.scope) for g in rows if g.adopted)  # issue 11 podid
        approvals = list(req.approvals.all())
        requirement = policy.required_approvals(req)
        return cls(
            cluster=req.cluster,
            namespace=req.namespace,
            service_account=req.service_account,
            grants=grants,
            risk_reasons=list(req.risk_reasons),
            approval_needs=requirement.needs(),
            approval_progress=requirement.progress(policy.votes(approvals)),
            approvals=approvals,
            identity_name=req.identity_name,
            fic_name=req.fic_name,
            adopted_identity_resource_id=req.adopted_identity_resource_id,
            adopted_grants=adopted,
        )


# ---- widgets that tell the browser script which cluster an option belongs to ----------------------------


class PlainSelect(forms.Select):
    """Django's <select>, written in Python: the same markup, without Django's two template includes per option
    (issue 13: the audit filter's ~130 actions cost more to render than the page's 50 events)."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        widget = self.get_context(name, value, attrs)["widget"]
        parts = [format_html('<select name="{}"', widget["name"]), _attrs(widget["attrs"]), ">"]
        for group_name, options, _index in widget["optgroups"]:
            if group_name:
                parts.append(format_html('\n  <optgroup label="{}">', group_name))
            for o in options:
                parts += [format_html('\n  <option value="{}"', str(o["value"])), _attrs(o["attrs"])]
                parts.append(format_html(">{}</option>\n", str(o["label"])))
            if group_name:
                parts.append("\n  </optgroup>")
        parts.append("\n</select>")
        return mark_safe("".join(parts))  # noqa: S308  # nosec B308 B703 -- every part is escaped by format_html


def _attrs(attrs: dict[str, Any]) -> str:
    """HTML attributes as django/forms/widgets/attrs.html writes them (in order; True bare, False left out)."""
    return "".join(
        format_html(" {}", k) if v is True else format_html(' {}="{}"', k, str(v))
        for k, v in attrs.items()
        if v is not False
    )


class ClusterSelect(PlainSelect):
    """Options carry `data-name` (the cluster's name) for the identity-name hint."""

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-name"] = instance.name
        return option


class GroupedByClusterSelect(PlainSelect):
    """A select whose option groups are clusters; each option carries `data-cluster` (the cluster's pk)."""

    def __init__(self, *args: Any, group_clusters: dict[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_clusters = group_clusters or {}

    def optgroups(self, name: str, value: Any, attrs: dict[str, Any] | None = None) -> list[Any]:
        groups = super().optgroups(name, value, attrs)
        for group_name, options, _index in groups:
            cluster_pk = self.group_clusters.get(group_name)
            if cluster_pk is not None:
                for option in options:
                    option["attrs"]["data-cluster"] = str(cluster_pk)
        return groups


def _cluster_groups(items: dict[Cluster, list[tuple[str, str]]], empty: str) -> tuple[list[Any], dict[str, int]]:
    """Select choices grouped by cluster, and the group label -> cluster pk map for the widget."""
    choices: list[Any] = [("", empty)]
    labels: dict[str, int] = {}
    for cluster, options in items.items():
        label = f"{cluster} ({cluster.name})" if str(cluster) != cluster.name else cluster.name
        labels[label] = cluster.pk
        choices.append((label, options))
    return choices, labels


# ---- the request form -----------------------------------------------------------------------------------


class MultilineField(forms.CharField):
    """Text from a textarea, with the browser's CRLF line ends as LF: its length then counts as the page's
    counter and `maxlength` count it (a browser sends each line end as two characters)."""

    def to_python(self, value: Any) -> str:
        return super().to_python(value).replace("\r\n", "\n")


class RequestForm(forms.Form):
    cluster = forms.ModelChoiceField(
        queryset=Cluster.objects.all(), widget=ClusterSelect, empty_label="Choose a cluster"
    )
    namespace = forms.CharField(
        help_text="Only the namespaces of your team (the owning Entra group) that the cluster allows are offered.",
        widget=GroupedByClusterSelect,
    )
    service_account = forms.CharField(
        label="ServiceAccount name",
        help_text="Lower-case letters, digits, '-' and '.'. The portal creates it, annotated for workload identity.",
    )
    purpose = MultilineField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=PURPOSE_MAX_LENGTH,
        help_text="What the workload does with these roles; approvers read this.",
        error_messages={"max_length": "Keep the purpose under %(limit_value)d characters (it has %(show_value)d)."},
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.clusters = list(Cluster.objects.all())
        # Only the namespaces this user's team owns (admins: all the cluster allows) are offered.
        self.requestable = {c: access.requestable_namespaces(user, c) for c in self.clusters}
        choices, labels = _cluster_groups(
            {c: [(ns, ns) for ns in names] for c, names in self.requestable.items()}, "Choose a namespace"
        )
        widget = self.fields["namespace"].widget
        widget.choices, widget.group_clusters = choices, labels
        self._preselect()

    def _preselect(self) -> None:
        """With one cluster, or one namespace in all, there is nothing to choose: it is chosen."""
        if len(self.clusters) == 1:
            self.fields["cluster"].empty_label = None
            if not self.is_bound and not self.initial.get("cluster"):
                self.initial["cluster"] = self.clusters[0].pk
        offered = [(c, ns) for c, names in self.requestable.items() for ns in names]
        if len(offered) == 1 and not self.is_bound and not self.initial.get("namespace"):
            self.initial["namespace"] = offered[0][1]
            if not self.initial.get("cluster"):
                self.initial["cluster"] = offered[0][0].pk

    @property
    def no_namespaces(self) -> bool:
        """Whether this user may ask for an identity nowhere (their team owns no namespace on any cluster)."""
        return not any(self.requestable.values())

    def namespace_owners(self) -> list[tuple[Cluster, str, str]]:
        """(cluster, namespace, owning group) for every namespace the clusters allow: whom to ask to be added."""
        return [
            (c, ns, access.owning_group(c, ns) or "no group yet: ask an admin")
            for c in self.clusters
            for ns in c.allowed_namespaces
        ]

    def clean_namespace(self) -> str:
        value = self.cleaned_data["namespace"]
        if error := naming.label_error(value):
            raise ValidationError(f"The namespace {error}.")
        return value

    def clean_service_account(self) -> str:
        value = self.cleaned_data["service_account"]
        if error := naming.subdomain_error(value):
            raise ValidationError(f"The ServiceAccount name {error}.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        cluster, namespace, sa = data.get("cluster"), data.get("namespace"), data.get("service_account")
        if cluster and namespace and namespace not in cluster.allowed_namespaces:
            self.add_error("namespace", f"The namespace {namespace} is not open for identities on {cluster.name}.")
            return data
        if cluster and namespace and not access.can_request_in(self.user, cluster, namespace):
            self.add_error(
                "namespace",
                f"You are not a member of the Entra group that owns {namespace} on {cluster.name}; ask that team "
                "to request it, or an admin.",
            )
            return data
        if cluster and namespace and sa:
            if workflow.active_request_exists(cluster, namespace, sa):
                self.add_error(
                    "service_account", "There is already an active request for this ServiceAccount on this cluster."
                )
            elif workflow.identity_name_taken(naming.identity_name(cluster.name, namespace, sa)):
                # Each request makes its own identity with one FIC; a second request on the same identity
                # would fight over it (and over the per-identity FIC limit). The database refuses it too
                # (one_active_request_per_identity_name); this says so before the review page.
                self.add_error(None, workflow.IDENTITY_NAME_TAKEN)
        return data


class GrantForm(forms.Form):
    role = forms.ModelChoiceField(
        queryset=AllowedRole.objects.select_related("cluster"),
        widget=GroupedByClusterSelect,
        error_messages={"invalid_choice": "Choose a role from the cluster's catalogue."},
    )
    scope = forms.CharField(
        max_length=512,
        widget=forms.TextInput(attrs={"placeholder": "/subscriptions/…/resourceGroups/…/providers/…", "size": 80}),
        help_text="The Azure resource ID the role is granted on.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        by_cluster: dict[Cluster, list[tuple[str, str]]] = {}
        for role in AllowedRole.objects.select_related("cluster").order_by("cluster__name", "role_name"):
            by_cluster.setdefault(role.cluster, []).append((str(role.pk), role.role_name))
        choices, labels = _cluster_groups(by_cluster, "Choose a role")
        widget = self.fields["role"].widget
        widget.choices, widget.group_clusters = choices, labels

    def clean_scope(self) -> str:
        value = self.cleaned_data["scope"]
        if error := naming.scope_error(value):
            raise ValidationError(f"The scope {error}.")
        return value

    def check_for(self, cluster: Cluster) -> None:
        """Errors for this grant on `cluster`: role in its catalogue, scope in the role's patterns and subscriptions."""
        role, scope = self.cleaned_data.get("role"), self.cleaned_data.get("scope")
        if role and role.cluster_id != cluster.pk:
            self.add_error("role", f"{role.role_name} is not in the catalogue of {cluster.name}.")
            return
        if role and (reason := policy.entry_forbidden_reason(role)):
            # Registered before the rule, or its definition changed: the catalogue entry is never granted.
            self.add_error("role", f"{role.role_name} cannot be requested: {reason}")
            return
        if not (role and scope):
            return
        if not any(naming.scope_matches(scope, p) for p in role.scope_patterns):
            patterns = "; ".join(role.scope_patterns) or "(none)"
            self.add_error("scope", f"{role.role_name} may only be granted on scopes like: {patterns}")
            return
        if not policy.scope_allowed(cluster, scope):
            self.add_error("scope", f"The subscription of this scope is not allowed for {cluster.name}.")


class BaseGrantFormSet(forms.BaseFormSet):
    """Grant rows. Every row is optional on its own (a blank row is ignored); at least one is required."""

    def initial_form_count(self) -> int:
        # No row is "existing": rows are re-rendered from what was typed, and any may be blanked.
        return 0

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        return {**super().get_form_kwargs(index), "empty_permitted": True, "use_required_attribute": False}

    def filled_forms(self) -> list[GrantForm]:
        return [f for f in self.forms if f.has_changed()]

    def clean(self) -> None:
        # Checked even when some rows have errors of their own: every error is shown at once.
        filled = self.filled_forms()
        if not filled:
            raise ValidationError("Ask for at least one role on one scope.")
        seen: set[tuple[int, str]] = set()
        for form in filled:
            role, scope = form.cleaned_data.get("role"), form.cleaned_data.get("scope")
            if not (role and scope):
                continue
            key = (role.pk, scope.lower())
            if key in seen:
                form.add_error("scope", "This role on this scope is already listed.")
            seen.add(key)


GrantFormSet = forms.formset_factory(
    GrantForm, formset=BaseGrantFormSet, extra=1, max_num=MAX_GRANTS, absolute_max=MAX_GRANTS, validate_max=True
)


class RequestSubmission:
    """The request form and its grant rows, validated together.

    Bound (`data`) to validate what was posted; or unbound from raw `values` to re-show what was typed without
    error messages (after "Add another grant" or "Edit"). `user` is who asks: only namespaces they may request in
    are offered and accepted.
    """

    def __init__(
        self, data: QueryDict | None = None, *, user: User, values: QueryDict | None = None, add_rows: int = 0
    ):
        if data is not None:
            self.form = RequestForm(data, user=user)
            self.grants = GrantFormSet(data, prefix=GRANTS_PREFIX)
            return
        values = values if values is not None else QueryDict()
        rows = grant_rows(values)
        self.form = RequestForm(initial={k: values.get(k, "") for k in RequestForm.base_fields}, user=user)
        self.grants = GrantFormSet(initial=rows, prefix=GRANTS_PREFIX)
        self.grants.extra = min(max(len(rows) + add_rows, 1), MAX_GRANTS)

    @classmethod
    def copy_of(cls, req: IdentityRequest, *, user: User) -> RequestSubmission:
        """A new, unbound form filled from `req` (a rejected, cancelled or revoked request): what to run where,
        why, and the grants; a grant whose role left the catalogue keeps its scope, its role left to choose."""
        roles = {r.role_definition_id.lower(): r.pk for r in req.cluster.roles.all()}
        values = QueryDict(mutable=True)
        values.update(
            {
                "cluster": str(req.cluster_id),
                "namespace": req.namespace,
                "service_account": req.service_account,
                "purpose": req.purpose,
            }
        )
        grants = list(req.grants.all())[:MAX_GRANTS]
        values[f"{GRANTS_PREFIX}-TOTAL_FORMS"] = str(len(grants))
        for i, grant in enumerate(grants):
            values[f"{GRANTS_PREFIX}-{i}-role"] = str(roles.get(grant.role_definition_id.lower(), ""))
            values[f"{GRANTS_PREFIX}-{i}-scope"] = grant.scope
        return cls(values=values, user=user)

    def is_valid(self) -> bool:
        # Everything is evaluated, every row checked against the cluster, so every error is shown at once.
        form_ok, grants_ok = self.form.is_valid(), self.grants.is_valid()
        cluster = self.form.cleaned_data.get("cluster")
        if cluster is not None:
            for grant in self.grants.filled_forms():
                grant.check_for(cluster)
            grants_ok = grants_ok and not any(f.errors for f in self.grants.forms)
        return form_ok and grants_ok

    def error_summary(self) -> list[tuple[str, str]]:
        """Every error on the page as (id of the field it belongs to, or "", message), in page order."""
        items: list[tuple[str, str]] = [("", str(e)) for e in self.form.non_field_errors()]
        for bound in self.form:
            items += [(bound.auto_id, f"{bound.label}: {e}") for e in bound.errors]
        first_role = f"id_{GRANTS_PREFIX}-0-role"
        items += [(first_role, f"Role grants: {e}") for e in self.grants.non_form_errors()]
        for number, grant in enumerate(self.grants.forms, start=1):
            items += [("", f"Grant {number}: {e}") for e in grant.non_field_errors()]
            for bound in grant:
                items += [(bound.auto_id, f"Grant {number}, {bound.label.lower()}: {e}") for e in bound.errors]
        return items

    def grant_requests(self) -> list[workflow.GrantRequest]:
        return [
            workflow.GrantRequest(role=f.cleaned_data["role"], scope=f.cleaned_data["scope"])
            for f in self.grants.filled_forms()
        ]

    def plan(self) -> Plan:
        data = self.form.cleaned_data
        grants = self.grant_requests()
        reasons = policy.grant_risk_reasons(policy.facts_of(grants))
        needs = policy.Requirement(policy.high_risk_mode() if reasons else "one").needs()
        return Plan(
            cluster=data["cluster"],
            namespace=data["namespace"],
            service_account=data["service_account"],
            grants=[(g.role.role_name, g.scope) for g in grants],
            risk_reasons=reasons,
            approval_needs=needs,
        )


def grant_rows(values: QueryDict) -> list[dict[str, str]]:
    """The grant rows typed so far (blank ones dropped), read from posted data."""
    try:
        total = int(values.get(f"{GRANTS_PREFIX}-TOTAL_FORMS", "0"))
    except ValueError:
        total = 0
    rows = []
    for i in range(min(max(total, 0), MAX_GRANTS)):
        row = {k: values.get(f"{GRANTS_PREFIX}-{i}-{k}", "").strip() for k in ("role", "scope")}
        if any(row.values()):
            rows.append(row)
    return rows


# ---- approval decision ----------------------------------------------------------------------------------


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        max_length=2000,
        help_text="Required when rejecting: the requester reads it.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("decision") == "reject" and not data.get("comment", "").strip():
            self.add_error("comment", "Say why you reject the request.")
        return data


# ---- audit filters --------------------------------------------------------------------------------------


# The audit log's action filter: every code events.py has words for, grouped by what it is about. A fixed list (no
# `SELECT DISTINCT action` over a million rows on every view).
AUDIT_ACTION_GROUPS = {
    "request": "Requests",
    "provisioning": "Requests",
    "change": "Changes",
    "move": "Moves",
    "identity": "Identities",
    "drift": "Drift",
    "cluster": "Clusters",
    "user": "People",
    "step": "Steps",
}


@functools.cache  # fixed by the code: built once, not on every view of the audit log
def audit_action_choices() -> list[tuple[str, Any]]:
    codes = [*events.WORDS, *(f"step.{n}.{p}" for n in Step.Name.values for p in events.STEP_PHASES)]
    groups: dict[str, list[tuple[str, str]]] = {}
    for code in codes:
        group = AUDIT_ACTION_GROUPS.get(code.split(".", 1)[0], "Other")
        groups.setdefault(group, []).append((code, code))
    return [("", "Any action"), *((g, sorted(c)) for g, c in groups.items())]


# The audit filter's dates are turned into the start of a day and the day after (half-open ranges) in the portal's
# time zone: the calendar's last day has no "day after" and its first none before it in UTC, so both ends are kept
# off the edges of what Python's dates can hold (9999-12-31 was a 500).
AUDIT_DATE_BOUNDS = [
    MinValueValidator(date(1970, 1, 1), "Choose a date from 1970 on."),
    MaxValueValidator(date(9998, 12, 31), "Choose a date before the year 9999."),
]


class AuditFilterForm(forms.Form):
    """The audit log's filters. Each one is served by an index (migration 0026) and none reads the whole table."""

    actor = forms.CharField(
        required=False,
        label="Who",
        max_length=256,
        help_text="A person's e-mail, user name or full name, exactly; or \"system\" for the portal's jobs.",
    )
    action = forms.ChoiceField(
        required=False, widget=PlainSelect, error_messages={"invalid_choice": "Choose an action from the list."}
    )
    cluster = forms.ModelChoiceField(
        queryset=Cluster.objects.order_by("name"), required=False, empty_label="Any cluster", widget=PlainSelect
    )
    request = forms.UUIDField(
        required=False,
        label="Request ID",
        error_messages={"invalid": "A request ID looks like 0b5c…-…: copy it from the request's page."},
    )
    identity = forms.CharField(
        required=False, label="Identity name", max_length=128, help_text="The managed identity's name, exactly."
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}), validators=AUDIT_DATE_BOUNDS
    )
    date_to = forms.DateField(
        required=False,
        label="To (inclusive)",
        widget=forms.DateInput(attrs={"type": "date"}),
        validators=AUDIT_DATE_BOUNDS,
    )
    # issue 13 search: words looked up in a trigram index (requests_app/search.py), each at least MIN_CHARS long.
    q = forms.CharField(
        required=False,
        label="Search",
        max_length=200,
        help_text=(
            f"Words (each of {search.MIN_CHARS} characters or more) in who acted, the action, the details, or the "
            "request's identity name, namespace or ServiceAccount."
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = audit_action_choices()

    def clean_q(self) -> str:
        text = self.cleaned_data["q"].strip()
        try:
            search.words(text)
        except search.SearchError as exc:
            raise ValidationError(str(exc)) from exc
        return text

    def clean_actor(self) -> str:
        name = self.cleaned_data["actor"].strip()
        self.actor_user: User | None = None
        if not name or name.lower() == "system":
            return name
        people = list(
            User.objects.filter(Q(email__iexact=name) | Q(username__iexact=name) | Q(display_name__iexact=name))[:2]
        )
        if not people:
            raise ValidationError("No one by that e-mail, user name or name has signed in to the portal.")
        if len(people) > 1:
            raise ValidationError("More than one person has that name: give their e-mail instead.")
        self.actor_user = people[0]
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def filter(self, qs: Any) -> Any:
        """`qs` narrowed by the valid filters (an invalid one is ignored and shown as an error)."""
        self.is_valid()
        data = self.cleaned_data  # only the fields that validated
        if data.get("actor"):
            user = getattr(self, "actor_user", None)
            qs = qs.filter(actor=user) if user else qs.filter(actor__isnull=True)
        if data.get("action"):
            qs = qs.filter(action=data["action"])
        if data.get("cluster"):
            qs = qs.filter(cluster=data["cluster"])  # audit.record fills it from the request
        if data.get("request"):
            qs = qs.filter(request_id=data["request"])
        if data.get("identity"):
            # A name may have been used again after a revocation: every request that carried it.
            ids = IdentityRequest.objects.filter(identity_name=data["identity"].strip()).values("id")
            qs = qs.filter(request_id__in=ids)
        # Half-open ranges of whole days in the portal's time zone: `created_at` compared as stored, so the index
        # on it serves them (`created_at__date` would convert every row first).
        if data.get("date_from"):
            qs = qs.filter(created_at__gte=day_start(data["date_from"]))
        if data.get("date_to"):
            qs = qs.filter(created_at__lt=day_start(data["date_to"] + timedelta(days=1)))
        if data.get("q"):
            qs = search.audit_events(qs, data["q"])
        return qs


def day_start(day: date) -> datetime:
    """Midnight at the start of `day` in the portal's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


class RevokeForm(forms.Form):
    """Why an identity is revoked: it goes into the audit log and the requester's e-mail."""

    # Django's CharField also refuses NUL characters, which PostgreSQL cannot store.
    reason = forms.CharField(
        max_length=2000,
        error_messages={
            "required": "Say why the identity is revoked.",
            "max_length": "Keep the reason under %(limit_value)d characters.",
        },
    )
