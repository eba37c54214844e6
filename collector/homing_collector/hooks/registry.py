"""In-process hooks: Python callables for the three outgoing events, and where they come
from (`create_app(hooks=...)` and the entry-point group `homing_collector.hooks`).

A campaign names the filter and custom delivery hooks it uses, by their `name`, with a
`hook:NAME` URL in place of a webhook's (`Hook.WebUrl`, `CampaignHook.WebUrl`,
`CustomDeliveryConfiguration.DeliveryUri`): a hook no campaign names is never called.
Event-stream hooks each get every stored event. Hooks given to create_app come first,
in the order given, then entry points by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

logger = logging.getLogger("homing_collector")

ENTRY_POINT_GROUP = "homing_collector.hooks"
KINDS = ("filter", "custom_delivery", "event_stream")

HookFunction = Callable[[Any], Any]  # sync or async; the argument is a dict or a list

# A campaign's WebUrl or DeliveryUri of this scheme names an in-process hook: hook:NAME.
SCHEME = "hook:"
# A name a campaign can give: printable ASCII with no space and no slash (so that a
# mistaken "hook://crm" is refused, not looked up as "//crm"), as entry point names are.
_CAMPAIGN_NAME = re.compile(r"[\x21-\x2e\x30-\x7e]{1,200}")
NAME_RULE = "1 to 200 printable ASCII characters, with no space and no slash"


def hook_name(url: str) -> str | None:
    """The name a `hook:NAME` URL gives (maybe malformed: see is_campaign_name); None for
    any other URL.

    >>> hook_name("hook:crm"), hook_name("https://crm.example.com/filter")
    ('crm', None)
    """
    return url[len(SCHEME) :] if url.startswith(SCHEME) else None


def how_to_register(kind: str, name: str) -> str:
    return (
        f"register one as Hooks({kind}=..., name={name!r}), given to create_app(hooks=...) or"
        f" named by an entry point of the group {ENTRY_POINT_GROUP}"
    )


def is_campaign_name(name: str) -> bool:
    """Whether a campaign can name a hook so (NAME_RULE)."""
    return _CAMPAIGN_NAME.fullmatch(name) is not None


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Python callables the collector calls, each optional, each sync or async.

    - `filter(request)`: for each campaign whose FILTER hook is `hook:NAME`, gets a
      FILTER hook request (Pinpoint's dict, `Endpoints` and all) and returns the
      endpoints to keep, a dict of endpoint id -> endpoint.
    - `custom_delivery(payload)`: for each campaign whose `DeliveryUri` is `hook:NAME`,
      gets a custom channel payload (Pinpoint's dict, at most 50 `Endpoints`); returning
      says it was delivered, raising that it should be tried again later.
    - `event_stream(records)`: gets a list of Pinpoint event-stream records (dicts), in
      the order the events were stored; returns when it has taken them.

    `name` is what campaigns call the hooks by (`hook:NAME`), labels them in /metrics
    and keys the event stream's durable cursor: keep it stable across restarts. By
    default it is the entry point's name, or, for hooks given to create_app, each
    function's qualified name (`module.function`).

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

    def named(self, kind: str, name: str) -> NamedHook | None:
        """The hook of `kind` registered as `name`, if any."""
        for hook in self.hooks[kind]:
            if hook.name == name:
                return hook
        return None

    def missing(self, kind: str, name: str) -> str:
        """Why `name` finds no hook of `kind` here, and which names would."""
        names = ", ".join(repr(hook.name) for hook in self.hooks[kind])
        missing = f"no {kind} hook named {name!r} is registered in this collector"
        if not names:
            return f"{missing}: no {kind} hook is registered at all"
        return f"{missing} (the {kind} hooks registered: {names})"

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
