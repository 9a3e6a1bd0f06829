"""Kubernetes object validation and list selectors, with the API server's exact wording.

`object_meta_errors` returns (field, value, message, reason) tuples that `k8s.invalid` turns into a 422
`Status` with `details.causes`. Selectors are parsed into predicates; a bad one raises `SelectorError`
(the API server answers 400 BadRequest).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    f"'{DNS1123_SUBDOMAIN}')"
)
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    f"'{QUALIFIED_NAME}')"
)
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    f"for validation is '{LABEL_VALUE}')"
)
TOTAL_ANNOTATION_SIZE = 256 * 1024

Error = tuple[str, Any, str, str]  # field, value, detail, cause reason


def go_quote(value: Any) -> str:
    """Render a value the way Go's %q / %v does inside field errors."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def dns1123_subdomain(value: str) -> list[str]:
    msgs = []
    if len(value) > 253:
        msgs.append("must be no more than 253 characters")
    if not re.fullmatch(DNS1123_SUBDOMAIN, value):
        msgs.append(DNS1123_SUBDOMAIN_MSG)
    return msgs


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: an optional DNS subdomain prefix, '/', then a name of at most 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        msgs = []
    elif len(parts) == 2:
        prefix, name = parts
        msgs = []
        if not prefix:
            msgs.append("prefix part must be non-empty")
        else:
            msgs += ["prefix part " + m for m in dns1123_subdomain(prefix)]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            f"validation is '{QUALIFIED_NAME}') with an optional DNS subdomain prefix and '/' (e.g. "
            "'example.com/MyName')"
        ]
    if not name:
        msgs.append("name part must be non-empty")
    elif len(name) > 63:
        msgs.append("name part must be no more than 63 characters")
    if name and not re.fullmatch(QUALIFIED_NAME, name):
        msgs.append(QUALIFIED_NAME_MSG)
    return msgs


def label_value(value: str) -> list[str]:
    msgs = []
    if len(value) > 63:
        msgs.append("must be no more than 63 characters")
    if not re.fullmatch(LABEL_VALUE, value):
        msgs.append(LABEL_VALUE_MSG)
    return msgs


def object_meta_errors(meta: dict[str, Any]) -> list[Error]:
    """ValidateObjectMeta for a namespaced object whose name must be a DNS-1123 subdomain."""
    errors: list[Error] = []
    name = meta.get("name") or ""
    if not isinstance(name, str):
        return [("metadata.name", name, "must be a string", "FieldValueInvalid")]
    if not name:
        errors.append(("metadata.name", None, "name or generateName is required", "FieldValueRequired"))
    for msg in dns1123_subdomain(name) if name else []:
        errors.append(("metadata.name", name, msg, "FieldValueInvalid"))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return errors + [("metadata.labels", labels, "must be a map of strings", "FieldValueInvalid")]
    for key, value in labels.items():
        for msg in qualified_name(key):
            errors.append(("metadata.labels", key, msg, "FieldValueInvalid"))
        if not isinstance(value, str):
            errors.append(("metadata.labels", value, "must be a string", "FieldValueInvalid"))
            continue
        for msg in label_value(value):
            errors.append(("metadata.labels", value, msg, "FieldValueInvalid"))
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        return errors + [("metadata.annotations", annotations, "must be a map of strings", "FieldValueInvalid")]
    total = 0
    for key, value in annotations.items():
        for msg in qualified_name(key.lower()):
            errors.append(("metadata.annotations", key, msg, "FieldValueInvalid"))
        if not isinstance(value, str):
            errors.append(("metadata.annotations", value, "must be a string", "FieldValueInvalid"))
            continue
        total += len(key) + len(value)
    if total > TOTAL_ANNOTATION_SIZE:
        errors.append(
            ("metadata.annotations", "", f"must have at most {TOTAL_ANNOTATION_SIZE} bytes", "FieldValueTooLong")
        )
    return errors


def error_body(value: Any, detail: str, reason: str) -> str:
    """field.Error.ErrorBody(): 'Invalid value: "x": detail' / 'Required value: detail'."""
    if reason == "FieldValueRequired":
        return f"Required value: {detail}"
    if reason == "FieldValueTooLong":
        return f"Too long: {detail}"
    return f"Invalid value: {go_quote(value)}: {detail}"


# ----- selectors --------------------------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


Predicate = Callable[[dict[str, str]], bool]
_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SPLIT = re.compile(r",(?![^()]*\))")  # commas outside parentheses


def label_selector(text: str) -> Predicate:
    """Parse `a=b,c!=d,e,!f,g in (h,i),j notin (k)` into a predicate over an object's labels."""
    preds: list[Predicate] = [_label_requirement(part.strip(), text) for part in _SPLIT.split(text) if part.strip()]
    return lambda labels: all(p(labels) for p in preds)


def _label_requirement(req: str, whole: str) -> Predicate:
    if m := re.fullmatch(rf"!\s*({_KEY})", req):
        key = m.group(1)
        return lambda labels: key not in labels
    if m := re.fullmatch(rf"({_KEY})", req):
        key = m.group(1)
        return lambda labels: key in labels
    if m := re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})", req):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^)]*)\)", req):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if not values:
            raise SelectorError("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty")
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    raise SelectorError(f"unable to parse requirement: found '{req}', expected: in, notin, =, ==, !=, gt, lt")


def field_selector(text: str, fields: dict[str, Callable[[dict[str, Any]], str]]) -> Callable[[dict[str, Any]], bool]:
    """Parse `metadata.name=x,metadata.namespace!=y` over the fields a resource supports."""
    preds: list[Callable[[dict[str, Any]], bool]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.groups()
        if name not in fields:
            known = ", ".join(f'"{f}"' for f in fields)
            raise SelectorError(f'"{name}" is not a known field selector: only {known}')
        get = fields[name]
        if op == "!=":
            preds.append(lambda obj, g=get, v=value: g(obj) != v)
        else:
            preds.append(lambda obj, g=get, v=value: g(obj) == v)
    return lambda obj: all(p(obj) for p in preds)
