"""The hooks' exceptions.

    HookError(ValueError)
     ├── SecretError          a signing secret is not in the whsec_ base64 form
     ├── HookConfigError      a hook or delivery setting breaks a rule (answered 400)
     └── HookResponseError    a receiver's answer cannot be used (fails its batch)

Each message names the field and the rule broken, and what to do instead.
"""

from __future__ import annotations


class HookError(ValueError):
    """The root of the hooks' errors."""


class SecretError(HookError):
    pass


class HookConfigError(HookError):
    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class HookResponseError(HookError):
    pass
