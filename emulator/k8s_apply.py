"""Field ownership (`metadata.managedFields`) and server-side apply, for ServiceAccounts.

As the API server's structured-merge-diff does it, simplified to the fields a ServiceAccount has:
- every write records who set which fields: an `Update` entry per field manager (the `fieldManager` query
  parameter, else the User-Agent's product name, as kubectl's `kubectl-create`, `kubectl-annotate`, … or the
  Python client's `OpenAPI-Generator`), owning the fields the write changed; `Apply` entries for
  `application/apply-patch+yaml` (server-side apply), owning exactly the fields the applied configuration names;
- an apply that would change a field another manager owns fails with 409 Conflict and one `FieldManagerConflict`
  cause per field (the API server's message); `force=true` takes the fields over instead;
- fields a manager applied before and no longer applies are removed, unless another manager owns them too;
- lists of objects with a `name` (secrets, imagePullSecrets) are merged by name, other lists replaced whole;
  annotation and label maps are granular (one field per key).
Field sets are kept as sets of paths, written out in the FieldsV1 format (`f:metadata`, `f:annotations`,
`k:{"name":"s1"}`, `.` for a map or list item itself).
"""

from __future__ import annotations

import copy
import json
from typing import Any

APPLY = "application/apply-patch+yaml"
# Not fields of the object's content: never owned.
UNOWNED_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")
GRANULAR_MAPS = ("annotations", "labels")

Path = tuple[str, ...]


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]):
        super().__init__(conflicts)
        self.conflicts = conflicts  # (manager, field path as the API server prints it)


def manager_of(query: Any, user_agent: str) -> str:
    return query.get("fieldManager") or user_agent.split("/")[0][:128]


def paths(obj: dict[str, Any]) -> set[Path]:
    """The fields an object (or an applied configuration) sets, as paths."""
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            for mk, mv in (value or {}).items():
                if mk in UNOWNED_META:
                    continue
                if mk in GRANULAR_MAPS and isinstance(mv, dict):
                    out.add(("f:metadata", f"f:{mk}", "."))
                    out |= {("f:metadata", f"f:{mk}", f"f:{k}") for k in mv}
                else:
                    out.add(("f:metadata", f"f:{mk}"))
        elif _keyed(value):
            for item in value:
                base = (f"f:{key}", _item_key(item))
                out.add((*base, "."))
                out |= {(*base, f"f:{k}") for k in item}
        else:
            out.add((f"f:{key}",))
    return out


def _keyed(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _item_key(item: dict[str, Any]) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def get(obj: dict[str, Any], path: Path) -> Any:
    """The value at a path (None when absent); a `.` path is the map or list item itself."""
    node: Any = obj
    for part in path:
        if part == ".":
            return node
        if part.startswith("k:"):
            name = json.loads(part[2:])["name"]
            node = next((i for i in node or [] if isinstance(i, dict) and i.get("name") == name), None)
        else:
            node = node.get(part[2:]) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def remove(obj: dict[str, Any], path: Path) -> None:
    """Take a field out of `obj`; an emptied map or list goes too."""
    *parents, last = path
    if last == ".":
        *parents, last = parents
    holder = _parent(obj, parents)
    if holder is None:
        return
    if last.startswith("k:"):
        name = json.loads(last[2:])["name"]
        holder[:] = [i for i in holder if not (isinstance(i, dict) and i.get("name") == name)]
    elif isinstance(holder, dict):
        holder.pop(last[2:], None)
    for depth in range(len(parents), 0, -1):  # prune what the removal emptied
        up, key = _parent(obj, parents[: depth - 1]), parents[depth - 1]
        child = get(obj, tuple(parents[:depth]))
        if isinstance(up, dict) and key.startswith("f:") and child in ({}, []) and key != "f:metadata":
            up.pop(key[2:], None)


def _parent(obj: dict[str, Any], parts: list[str]) -> Any:
    return obj if not parts else get(obj, tuple(parts))


def field_name(path: Path) -> str:
    """`.metadata.annotations.x`, `.secrets[name="s1"].name`: how conflicts name a field."""
    out = ""
    for part in path:
        if part == ".":
            continue
        if part.startswith("k:"):
            out += "[" + ",".join(f'{k}="{v}"' for k, v in json.loads(part[2:]).items()) + "]"
        else:
            out += "." + part[2:]
    return out


def fields_v1(owned: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(owned):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, sub in tree.items():
        if sub:
            out |= from_fields_v1(sub, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The managedFields entries with their field sets decoded: {manager, operation, fields, time}."""
    return [
        {
            "manager": e["manager"],
            "operation": e["operation"],
            "time": e.get("time"),
            "fields": from_fields_v1(e.get("fieldsV1") or {}),
        }
        for e in obj["metadata"].get("managedFields") or []
    ]


def encode(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "manager": e["manager"],
            "operation": e["operation"],
            "apiVersion": "v1",
            "time": e["time"],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(e["fields"]),
        }
        for e in entries
        if e["fields"]
    ]


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, now: str) -> None:
    """Give `manager` (operation Update) the fields this write set or changed; take removed fields from all."""
    entries = managers(old) if old is not None else []
    before = paths(old) if old is not None else set()
    after = paths(new)
    # A map or list item itself (`.`) changes only by coming into being; its keys are fields of their own.
    changed = {p for p in after if p not in before or (p[-1] != "." and get(old or {}, p) != get(new, p))}
    for e in entries:
        e["fields"] = (e["fields"] & after) - changed
    mine = next((e for e in entries if e["manager"] == manager and e["operation"] == "Update"), None)
    if changed:
        if mine is None:
            mine = {"manager": manager, "operation": "Update", "fields": set()}
            entries.append(mine)
        mine["fields"] |= changed
        mine["time"] = now
    new["metadata"]["managedFields"] = encode(entries)


def apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool, now: str) -> dict[str, Any]:
    """The object after `manager` applies `applied` to `live` (None: it does not exist yet). Raises ApplyConflict."""
    entries = managers(live) if live is not None else []
    wanted = paths(applied)
    conflicts = []
    for e in entries:
        if e["manager"] == manager and e["operation"] == "Apply":
            continue
        for p in sorted(e["fields"] & wanted):
            if p[-1] != "." and get(live or {}, p) != get(applied, p):
                conflicts.append((e["manager"], p))
    if conflicts and not force:
        raise ApplyConflict([(m, field_name(p)) for m, p in conflicts])
    for m, p in conflicts:  # forced: the fields change hands
        for e in entries:
            if e["manager"] == m:
                e["fields"].discard(p)
    out = copy.deepcopy(live) if live is not None else {"metadata": {}}
    mine = next((e for e in entries if e["manager"] == manager and e["operation"] == "Apply"), None)
    others = set().union(*(e["fields"] for e in entries if e is not mine)) if entries else set()
    for p in sorted((mine["fields"] if mine else set()) - wanted - others, key=len, reverse=True):
        remove(out, p)
    _merge(out, applied)
    if mine is None:
        mine = {"manager": manager, "operation": "Apply", "fields": set()}
        entries.append(mine)
    mine["fields"], mine["time"] = wanted, now
    out["metadata"]["managedFields"] = encode(entries)
    return out


def _merge(into: dict[str, Any], applied: dict[str, Any]) -> None:
    for key, value in applied.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            meta = into.setdefault("metadata", {})
            for mk, mv in (value or {}).items():
                if mk in UNOWNED_META[2:]:
                    continue
                if mk in GRANULAR_MAPS and isinstance(mv, dict):
                    meta.setdefault(mk, {}).update(copy.deepcopy(mv))
                else:
                    meta[mk] = copy.deepcopy(mv)
        elif _keyed(value) and isinstance(into.get(key), list):
            items = {i.get("name"): i for i in into[key] if isinstance(i, dict)}
            for item in value:
                items[item["name"]] = {**items.get(item["name"], {}), **copy.deepcopy(item)}
            into[key] = list(items.values())
        else:
            into[key] = copy.deepcopy(value)


def conflict_message(conflicts: list[tuple[str, str]]) -> str:
    """The API server's wording (structured-merge-diff's Conflicts.Error)."""
    if len(conflicts) == 1:
        m, f = conflicts[0]
        return f'Apply failed with 1 conflict: conflict with "{m}" using v1: {f}'
    by_manager: dict[str, list[str]] = {}
    for m, f in conflicts:
        by_manager.setdefault(m, []).append(f)
    parts = [f'conflicts with "{m}" using v1:\n' + "\n".join(f"- {f}" for f in fs) for m, fs in by_manager.items()]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(parts)
