"""In-process hooks: Python callables for the three outgoing events, and where they come
from (`create_app(hooks=...)` and the entry-point group `homing_collector.hooks`).

Several hooks of a kind may be registered, since several plugins may be installed:
filters run one after the other, each on what the one before kept; custom deliveries
and event streams each get every call. Hooks given to create_app come first, in the
order given, then entry points by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

logger = logging.getLogger("homing_collector")

ENTRY_POINT_GROUP = "homing_collector.hooks"
KINDS = ("filter", "custom_delivery", "event_stream")

HookFunction = Callable[[Any], Any]  # sync or async; the argument is a dict or a list


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Python callables the collector calls, each optional, each sync or async.

    - `filter(request)`: gets a FILTER hook request (Pinpoint's dict, `Endpoints` and
      all) and returns the endpoints to keep, a dict of endpoint id -> endpoint.
    - `custom_delivery(payload)`: gets a custom channel payload (Pinpoint's dict, at most
      50 `Endpoints`); what it returns is ignored.
    - `event_stream(records)`: gets a list of Pinpoint event-stream records (dicts), in
      the order the events were stored; returns when it has taken them.

    `name` labels the hooks in /metrics and keys the event stream's durable cursor:
    keep it stable across restarts. By default it is the entry point's name, or, for
    hooks given to create_app, each function's qualified name (`module.function`).

    >>> def keep_active(request):
    ...     endpoints = request["Endpoints"]
    ...     return {k: v for k, v in endpoints.items() if v.get("EndpointStatus") == "ACTIVE"}
    >>> Hooks(filter=keep_active, name="crm").name
    'crm'
    """

    filter: HookFunction | None = None
    custom_delivery: HookFunction | None = None
    event_stream: HookFunction | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for kind in KINDS:
            value = getattr(self, kind)
            if value is not None and not callable(value):
                raise TypeError(f"Hooks.{kind}: must be a callable, not {type(value).__name__}")
        if self.name is not None and (type(self.name) is not str or not self.name):
            raise TypeError("Hooks.name: must be a non-empty string")


@dataclass(frozen=True)
class NamedHook:
    kind: str  # one of KINDS
    name: str
    function: HookFunction


class Registry:
    """The hooks of this process, by kind, in the order they are called."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[NamedHook]] = {kind: [] for kind in KINDS}
        self.load_errors: list[str] = []  # entry points that could not be loaded, by name
        self._loaded: set[str] = set()  # groups loaded, each once however often asked

    def of(self, kind: str) -> list[NamedHook]:
        return self.hooks[kind]

    def add(self, hooks: Hooks, default_name: str | None = None) -> None:
        """Register each callable of `hooks`. ValueError if a name is taken for a kind:
        two event streams of one name would share a cursor."""
        for kind in KINDS:
            function = getattr(hooks, kind)
            if function is None:
                continue
            name = hooks.name or default_name or _qualified_name(function)
            if any(hook.name == name for hook in self.hooks[kind]):
                raise ValueError(
                    f"Hooks.name: a {kind} hook named {name!r} is already registered; give"
                    " each Hooks a name of its own"
                )
            self.hooks[kind].append(NamedHook(kind, name, function))

    def add_given(self, hooks: Hooks | Iterable[Hooks] | None) -> None:
        """What create_app was given: one Hooks, several, or None."""
        if hooks is None:
            return
        for one in [hooks] if isinstance(hooks, Hooks) else hooks:
            if not isinstance(one, Hooks):
                raise TypeError(
                    f"hooks: must be a homing_collector.Hooks or a list of them, not "
                    f"{type(one).__name__}"
                )
            self.add(one)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register the hooks of every installed entry point of `group`, by name. One that
        cannot be loaded is logged and left out (and named in `load_errors`): a broken
        plugin must not keep the collector from starting."""
        if group in self._loaded:
            return
        self._loaded.add(group)
        for entry in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                self.add(_load(entry), default_name=entry.name)
            except Exception:
                logger.exception(
                    "hooks: the entry point %r (%s) could not be loaded; it is left out",
                    entry.name,
                    entry.value,
                )
                self.load_errors.append(entry.name)


def _load(entry: EntryPoint) -> Hooks:
    """The Hooks an entry point names: a Hooks object, or a callable that returns one."""
    loaded = entry.load()
    if not isinstance(loaded, Hooks) and callable(loaded):
        loaded = loaded()
    if not isinstance(loaded, Hooks):
        raise TypeError(
            f"{entry.value} must be a homing_collector.Hooks, or a function of no arguments"
            f" that returns one; it gave a {type(loaded).__name__}"
        )
    return loaded


def _qualified_name(function: HookFunction) -> str:
    module = getattr(function, "__module__", None) or type(function).__module__
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{qualname}"
