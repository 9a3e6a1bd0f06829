"""The three PATCH flavours of the Kubernetes API server, as they apply to a ServiceAccount.

* strategic merge patch (what kubectl and the Python client send for a dict body): maps merge recursively,
  `null` deletes a key, lists with a merge key (`secrets`, `imagePullSecrets` merge by `name`) merge item by
  item, other lists are replaced; the `$patch`, `$retainKeys`, `$setElementOrder/…` and
  `$deleteFromPrimitiveList/…` directives are understood.
* JSON merge patch (RFC 7386).
* JSON patch (RFC 6902), through the `jsonpatch` library.

Errors raise `PatchError(status, message)`: 400 for a patch that is not well formed, 422 for one that does
not apply (as the API server answers).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# Lists of a ServiceAccount that merge by a key instead of being replaced (k8s.io/api core/v1 patch tags).
MERGE_KEYS: dict[str, str] = {"secrets": "name", "imagePullSecrets": "name"}


class PatchError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def apply(content_type: str, original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply `patch` (already decoded from JSON) of the given media type to a copy of `original`."""
    if content_type == JSON_PATCH:
        return json_patch(original, patch)
    if not isinstance(patch, dict):
        raise PatchError(400, "json: cannot unmarshal array into Go value of type map[string]interface {}")
    if content_type == MERGE:
        return merge_patch(original, patch)
    return strategic_merge(original, patch, top=True)


def json_patch(original: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise PatchError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        result = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(original))
    except jsonpatch.InvalidJsonPatch as e:
        raise PatchError(400, str(e)) from e
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise PatchError(422, str(e)) from e
    if not isinstance(result, dict):
        raise PatchError(422, "the patch replaced the whole object with something that is not an object")
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(original: Any, patch: dict[str, Any], *, top: bool = False) -> dict[str, Any]:
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result: dict[str, Any] = copy.deepcopy(original) if isinstance(original, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
        elif key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            result[name] = [x for x in result.get(name) or [] if x not in drop]
        elif value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key), value)
        elif isinstance(value, list) and top and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[key])
        else:
            result[key] = copy.deepcopy(value)
    for name, order in orders.items():
        if top and name in MERGE_KEYS and isinstance(result.get(name), list):
            result[name] = _ordered(result[name], order, MERGE_KEYS[name])
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(400, f"map: {item} does not contain declared merge key: {key}")
        index = next((n for n, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def _ordered(items: list[Any], order: list[Any], key: str) -> list[Any]:
    """Sort by `$setElementOrder`; items it does not name keep their place after the named ones."""
    wanted = [o.get(key) for o in order if isinstance(o, dict)]
    rank = {value: n for n, value in enumerate(wanted)}
    return sorted(items, key=lambda i: rank.get(i.get(key) if isinstance(i, dict) else None, len(rank)))
