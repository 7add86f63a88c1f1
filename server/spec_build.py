"""Building a run spec: "key=value" overrides from the CLI and {dotted.key: value} dicts from the
API merged into a preset, validation with the failing field's path (SpecError), and an
experiment's `vary` expanded into one spec per combination. server/spec.py re-exports these.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel

if TYPE_CHECKING:
    from server.spec import RunSpec


def _run_spec() -> type[RunSpec]:
    # Imported when called: server.spec imports this module to re-export its names.
    from server.spec import RunSpec

    return RunSpec


class SpecError(ValueError):
    """A bad override or spec: `path` names the field (dotted), `message` what is allowed."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_value(text: str) -> Any:
    """CLI values: JSON-ish scalars and lists ('0.1', 'true', 'null', '[1,2]', '1,2' -> list)."""
    import json

    t = text.strip()
    if t.lower() == "null":  # "none" stays a string: it is a normalisation's name
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return json.loads(t)
    except ValueError:
        pass
    if "," in t:
        return [parse_value(part) for part in t.split(",")]
    return t


# Free-form JSON fields: a dict given for one is a value (it replaces the whole field), not a
# section to merge key by key; a dotted override ("model_options.hidden=32") sets one key.
FREE_FORM = frozenset({"model_options", "dataset_options"})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys, so a partial section merges into the preset's one
    instead of replacing it ({"probes": {"ics": {"every": 5}}} keeps probes.landscape)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in FREE_FORM:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a (nested) spec dict; unknown keys raise SpecError naming the key."""
    out = _deep_copy(base)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        model: type[BaseModel] = _run_spec()
        node = out
        for i, part in enumerate(parts):
            fields = model.model_fields
            names = _accepted_names(model)
            if part not in names:
                where = ".".join(parts[:i]) or "the run spec"
                raise SpecError(dotted, f"unknown key; {where} has: {', '.join(sorted(fields))}")
            if i == len(parts) - 1:
                for other, name in names.items():  # an old name replaces the new one, and back
                    if name == names[part] and other != part:
                        node.pop(other, None)
                node[part] = value
                break
            if model is _run_spec() and part in FREE_FORM:
                _set_nested(node, parts[i:], value)
                break
            sub = fields[part].annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                raise SpecError(dotted, f"{'.'.join(parts[: i + 1])} is a value, not a section")
            node = node.setdefault(part, {})
            model = sub
    return out


def _accepted_names(model: type[BaseModel]) -> dict[str, str]:
    """Every key the model accepts (its field names and their old names, e.g. SharpnessSpec's
    `iters`), mapped to the field's name."""
    out = {name: name for name in model.model_fields}
    for name, f in model.model_fields.items():
        if isinstance(f.validation_alias, AliasChoices):
            out.update({a: name for a in f.validation_alias.choices if isinstance(a, str)})
    return out


def _set_nested(node: dict[str, Any], keys: list[str], value: Any) -> None:
    """node[k0][k1]...[kn] = value, making (or replacing non-dict values by) dicts on the way;
    `node` is already a deep copy."""
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def build_spec(data: dict[str, Any]) -> RunSpec:
    """Validate a spec dict, turning pydantic errors into one SpecError with the field path."""
    from pydantic import ValidationError

    try:
        return _run_spec().model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        # pydantic words a validator's own ValueError "Value error, <ours>": ours is the message
        raise SpecError(path, err["msg"].removeprefix("Value error, ")) from None


def expand_vary(base: dict[str, Any], vary: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cross product of `vary` over `base`: one spec dict per combination, in a stable order.

    Runs of one experiment differ only in the varied keys, so they share seed and data order
    unless `seed` itself is varied.
    """
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"vary.{key}", "must be a non-empty list of values")
    keys = list(vary)
    combos = itertools.product(*(vary[k] for k in keys)) if keys else [()]
    return [apply_overrides(base, dict(zip(keys, combo, strict=True))) for combo in combos]
