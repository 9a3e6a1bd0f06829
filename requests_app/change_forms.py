"""The change form: the identity's roles with a "remove" box each, rows of roles to add, the purpose, and why.

Rows to add are `forms.GrantForm`s checked by `GrantForm.check_for` against the identity's cluster (catalogue,
scope patterns, forbidden roles, subscriptions), exactly as on the request form; the difference against what
exists is `changes.diff`. Like `forms.RequestSubmission`, it is bound to validate what was posted, or unbound
from raw `values` to show what was typed again without errors ("Add another role", "Edit").
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from . import changes, workflow
from .forms import MAX_GRANTS, PURPOSE_MAX_LENGTH, BaseGrantFormSet, GrantForm, MultilineField
from .models import IdentityRequest, RoleGrant

ADD_PREFIX = "add"


class ChangeForm(forms.Form):
    remove = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Roles to remove",
        error_messages={"invalid_choice": "That role is no longer granted to this identity; review the list again."},
    )
    purpose = MultilineField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=PURPOSE_MAX_LENGTH,
        help_text="Edit it if the workload's purpose changes; approvers read it.",
        error_messages={"max_length": "Keep the purpose under %(limit_value)d characters (it has %(show_value)d)."},
    )
    reason = MultilineField(
        label="Why this change",
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="What the workload needs now, or no longer needs; approvers read this.",
        error_messages={"required": "Say why the identity needs this change."},
    )

    def __init__(self, *args: Any, grants: list[RoleGrant], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["remove"].choices = [(str(g.pk), f"{g.role_name} on {g.scope}") for g in grants]


class AddFormSet(BaseGrantFormSet):
    """Roles to add: optional (a change may only remove, or only change the purpose); a repeated row is refused."""

    def clean(self) -> None:
        try:
            super().clean()
        except ValidationError:
            if self.filled_forms():  # a real error; "ask for at least one role" does not apply to a change
                raise


AddGrantFormSet = forms.formset_factory(
    GrantForm, formset=AddFormSet, extra=1, max_num=MAX_GRANTS, absolute_max=MAX_GRANTS, validate_max=True
)


class ChangeSubmission:
    def __init__(
        self,
        req: IdentityRequest,
        data: QueryDict | None = None,
        *,
        values: QueryDict | None = None,
        add_rows: int = 0,
    ) -> None:
        self.req = req
        self.grants = list(req.grants.all())
        if data is not None:
            self.form = ChangeForm(data, grants=self.grants)
            self.adds = AddGrantFormSet(data, prefix=ADD_PREFIX)
        else:
            values = values if values is not None else QueryDict()
            initial = {"purpose": values.get("purpose", req.purpose), "reason": values.get("reason", "")}
            initial["remove"] = values.getlist("remove")
            self.form = ChangeForm(initial=initial, grants=self.grants)
            rows = _rows(values)
            self.adds = AddGrantFormSet(initial=rows, prefix=ADD_PREFIX)
            self.adds.extra = min(max(len(rows) + add_rows, 1), MAX_GRANTS)
        roles = [("", "Choose a role"), *((str(r.pk), r.role_name) for r in req.cluster.roles.all())]
        for row in [*self.adds.forms, self.adds.empty_form]:
            # Only the identity's cluster's catalogue is offered (check_for refuses any other anyway).
            row.fields["role"].widget.choices = roles
        self._diff: changes.Diff | None = None

    def is_valid(self) -> bool:
        form_ok, adds_ok = self.form.is_valid(), self.adds.is_valid()
        have = {changes.Line.of(g).key for g in self.grants}
        for row in self.adds.filled_forms():
            row.check_for(self.req.cluster)
            role, scope = row.cleaned_data.get("role"), row.cleaned_data.get("scope")
            if role and scope and not row.errors and (role.role_definition_id.lower(), scope.lower()) in have:
                row.add_error("scope", f"The identity already has {role.role_name} on this scope.")
        adds_ok = adds_ok and not any(f.errors for f in self.adds.forms)
        if form_ok and adds_ok:
            d = self.diff()
            if d.empty:
                self.form.add_error(None, "Nothing to change: remove a role, add one, or change the purpose.")
            elif d.roles_after == 0:
                self.form.add_error(None, "An identity keeps at least one role: add one, or revoke the identity.")
        return form_ok and adds_ok and not self.form.errors

    def removed(self) -> list[RoleGrant]:
        chosen = set(self.form.cleaned_data.get("remove", []))
        return [g for g in self.grants if str(g.pk) in chosen]

    def grant_requests(self) -> list[workflow.GrantRequest]:
        return [
            workflow.GrantRequest(role=f.cleaned_data["role"], scope=f.cleaned_data["scope"])
            for f in self.adds.filled_forms()
        ]

    def diff(self) -> changes.Diff:
        if self._diff is None:
            self._diff = changes.diff(
                [changes.Line.of(g) for g in self.grants],
                remove=[changes.Line.of(g) for g in self.removed()],
                add=[changes.Line(g.role.role_name, g.role.role_definition_id, g.scope) for g in self.grant_requests()],
                purpose_before=self.req.purpose,
                purpose_after=self.form.cleaned_data.get("purpose", ""),
            )
        return self._diff

    def error_summary(self) -> list[tuple[str, str]]:
        """Every error on the page as (id of its field, or "", message), in page order."""
        items: list[tuple[str, str]] = [("", str(e)) for e in self.form.non_field_errors()]
        for bound in self.form:
            items += [(bound.auto_id, f"{bound.label}: {e}") for e in bound.errors]
        items += [("", f"Roles to add: {e}") for e in self.adds.non_form_errors()]
        for number, row in enumerate(self.adds.forms, start=1):
            items += [("", f"Role to add {number}: {e}") for e in row.non_field_errors()]
            for bound in row:
                items += [(bound.auto_id, f"Role to add {number}, {bound.label.lower()}: {e}") for e in bound.errors]
        return items


def _rows(values: QueryDict) -> list[dict[str, str]]:
    try:
        total = int(values.get(f"{ADD_PREFIX}-TOTAL_FORMS", "0"))
    except ValueError:
        total = 0
    rows = []
    for i in range(min(max(total, 0), MAX_GRANTS)):
        row = {k: values.get(f"{ADD_PREFIX}-{i}-{k}", "").strip() for k in ("role", "scope")}
        if any(row.values()):
            rows.append(row)
    return rows
