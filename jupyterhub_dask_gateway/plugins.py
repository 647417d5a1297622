"""Finding the class a setting names: ``backend_class``, ``authenticator_class``.

A name is an entry point of the plugin group (what third-party packages register),
one of ours, a dask-gateway-server class path (configs migrate as they are), or an
import string; whatever it resolves to must subclass the contract's base class.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from traitlets.utils.importstring import import_item


def load_plugin_class(
    name: str, *, group: str, builtin: dict[str, str], aliases: dict[str, str], base: type
) -> type:
    name = aliases.get(name, name)
    for ep in entry_points(group=group):
        if ep.name == name:
            cls = ep.load()
            break
    else:
        cls = import_item(builtin.get(name, name))
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{name!r} is not a {base.__name__}")
    return cls
