"""Roles and clearances (``roles.yaml``): who may read which level.

    >>> get_role("analyst").clearance
    3
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from healthlake.yamlfile import read_yaml

__all__ = ["Role", "AccessError", "roles", "get_role", "ROLES_FILE"]

ROLES_FILE = Path(__file__).with_name("roles.yaml")


class AccessError(ValueError):
    """Root error of the access layer (unknown role, bad role file, refused query)."""


@dataclass(frozen=True)
class Role:
    name: str
    clearance: int
    zh: str
    description: str = ""
    requires_resident_authorisation: bool = False


@lru_cache(maxsize=4)
def roles(path: str = str(ROLES_FILE)) -> dict[str, Role]:
    raw = read_yaml(path) or {}
    out = {}
    for name, r in (raw.get("roles") or {}).items():
        clearance = r.get("clearance")
        if not isinstance(clearance, int) or not 1 <= clearance <= 5:
            raise AccessError(f"role '{name}': clearance must be an integer 1-5, got {clearance!r}")
        out[name] = Role(name=name, clearance=clearance, zh=r.get("zh", name), description=r.get("description", ""),
                         requires_resident_authorisation=bool(r.get("requires_resident_authorisation", False)))
    return out


def get_role(name: str) -> Role:
    known = roles()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise AccessError(f"unknown role '{name}'{hint}; known roles: {', '.join(known)}")
    return known[name]
