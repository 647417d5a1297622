"""User-facing cluster options: the admin declares fields, users fill them in.

``Options(*fields, handler=None)`` mirrors dask-gateway-server's classes so admins
can migrate their config. ``spec()`` is what ``GET /api/v1/options`` serves (its
exact shape is fixed by the client: docs/protocol.md, "The cluster options spec");
``parse()`` validates a request; ``overrides()`` turns the values into
``ClusterConfig`` settings, through each field's ``target`` or the admin's
``handler(options[, user])``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping as MappingABC

from .errors import InvalidOptions

__all__ = ["Options", "String", "Bool", "Integer", "Float", "Select", "Mapping"]


class Field:
    """One option. ``target`` is the ClusterConfig name it sets (default: ``field``)."""

    type_name = ""

    def __init__(self, field, default=None, label=None, target=None):
        if not isinstance(field, str) or not field.isidentifier():
            raise ValueError(f"Option field names must be identifiers, got {field!r}")
        self.field = field
        self.label = label
        self.target = target or field
        self.default = self.validate(default)

    def extra_spec(self) -> dict:
        return {}

    def json_default(self):
        return self.default

    def spec(self) -> dict:
        return {
            "field": self.field,
            "label": self.label or self.field,
            "default": self.json_default(),
            "spec": {"type": self.type_name, **self.extra_spec()},
        }

    def validate(self, value):
        raise NotImplementedError

    def transform(self, value):
        """The value the ClusterConfig target receives."""
        return value

    def _fail(self, expected, value):
        raise InvalidOptions(f"{self.field} must be {expected}, got {value!r}")


class String(Field):
    type_name = "string"

    def __init__(self, field, default="", label=None, target=None):
        super().__init__(field, default, label, target)

    def validate(self, value):
        if not isinstance(value, str):
            self._fail("a string", value)
        return value


class Bool(Field):
    type_name = "bool"

    def __init__(self, field, default=False, label=None, target=None):
        super().__init__(field, default, label, target)

    def validate(self, value):
        if not isinstance(value, bool):
            self._fail("a bool", value)
        return value


class _Number(Field):
    #: What the bounds may be: the client builds its widgets from them.
    bound_types: tuple[type, ...] = (int, float)

    def __init__(self, field, default=0, min=None, max=None, label=None, target=None):
        for name, bound in (("min", min), ("max", max)):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, self.bound_types)
            ):
                raise TypeError(f"{type(self).__name__} {field!r}: {name} must be a number")
        self.min = min
        self.max = max
        super().__init__(field, default, label, target)

    def extra_spec(self):
        return {"min": self.min, "max": self.max}

    def _check_bounds(self, value, fmt):
        if self.min is not None and value < self.min:
            raise InvalidOptions(f"{self.field} must be >= {fmt(self.min)}, got {value}")
        if self.max is not None and value > self.max:
            raise InvalidOptions(f"{self.field} must be <= {fmt(self.max)}, got {value}")
        return value


class Integer(_Number):
    type_name = "int"
    bound_types = (int,)

    def validate(self, value):
        if not isinstance(value, int) or isinstance(value, bool):
            self._fail("an integer", value)
        return self._check_bounds(value, str)


class Float(_Number):
    type_name = "float"

    def validate(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail("a number", value)
        value = float(value)
        if not math.isfinite(value):
            self._fail("a finite number", value)
        return self._check_bounds(value, lambda v: f"{v:f}")


class Select(Field):
    """A choice among string keys; each key may stand for another value (``("large", 15)``)."""

    type_name = "select"

    def __init__(self, field, options, default=None, label=None, target=None):
        if not options:
            raise ValueError("Select needs at least one option")
        self.values = {}
        for opt in options:
            key, value = opt if isinstance(opt, tuple) else (opt, opt)
            if not isinstance(key, str):
                raise ValueError(f"Select keys must be strings, got {key!r}")
            self.values[key] = value
        super().__init__(
            field, default if default is not None else next(iter(self.values)), label, target
        )

    def extra_spec(self):
        return {"options": list(self.values)}

    def validate(self, value):
        if not isinstance(value, str) or value not in self.values:
            self._fail(f"one of {list(self.values)}", value)
        return value

    def transform(self, value):
        return self.values[value]


class Mapping(Field):
    type_name = "mapping"

    def __init__(self, field, default=None, label=None, target=None):
        super().__init__(field, {} if default is None else default, label, target)

    def validate(self, value):
        if not isinstance(value, MappingABC):
            self._fail("a mapping", value)
        return dict(value)


class Options:
    """The admin's declaration of cluster options.

    Parameters
    ----------
    *fields : Field
        The options, in display order.
    handler : callable, optional
        ``handler(options)`` or ``handler(options, user)`` returning a dict of
        ClusterConfig overrides. Without one, each field sets its ``target``.
    """

    def __init__(self, *fields, handler=None):
        names = [f.field for f in fields]
        if len(set(names)) != len(names):
            raise ValueError("Duplicate option field names")
        self.fields = list(fields)
        self.handler = handler
        self.passthrough: frozenset[str] = frozenset()

    def with_field(self, field: Field) -> Options:
        """A copy with one more field the gateway itself consumes (not a ClusterConfig value)."""
        new = Options(*self.fields, field, handler=self.handler)
        new.passthrough = self.passthrough | {field.field}
        return new

    def spec(self) -> list[dict]:
        return [f.spec() for f in self.fields]

    def parse(self, requested) -> dict:
        """Validate a request's ``cluster_options``; returns all fields with defaults filled."""
        if requested is None:
            requested = {}
        if not isinstance(requested, dict):
            raise InvalidOptions("cluster_options must be a JSON object")
        known = {f.field for f in self.fields}
        unknown = sorted(set(requested) - known)
        if unknown:
            raise InvalidOptions(f"Unknown fields {unknown}")
        return {
            f.field: f.validate(requested[f.field]) if f.field in requested else f.default
            for f in self.fields
        }

    def overrides(self, values: dict, user) -> dict:
        """ClusterConfig overrides for validated ``values``."""
        fields = [f for f in self.fields if f.field not in self.passthrough]
        if self.handler is None:
            return {f.target: f.transform(values[f.field]) for f in fields}
        transformed = _AttrDict({f.field: f.transform(values[f.field]) for f in fields})
        n_args = len(inspect.signature(self.handler).parameters)
        try:
            out = self.handler(transformed, user) if n_args >= 2 else self.handler(transformed)
        except InvalidOptions:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidOptions(str(exc)) from None
        if not isinstance(out, dict):
            raise TypeError("The options handler must return a dict")
        return out


class _AttrDict(dict):
    """Handlers written for dask-gateway-server read options as attributes or keys."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
