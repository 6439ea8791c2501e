"""Who may do what with a serving endpoint, as Databricks has it (pure logic, no I/O).

A caller is an :class:`Identity`: a principal name, its groups and the secret scopes it may
reference. Members of group ``admins`` manage everything; every authenticated principal is in
group ``users``; members of ``can_create_endpoints`` may create endpoints.

Each endpoint carries an access control list of :class:`Grant` s, each giving a user, group or
service principal one :class:`PermissionLevel`:

- ``CAN_VIEW``: get it, see it in lists;
- ``CAN_QUERY``: also query it (HTTP and Flight);
- ``CAN_MANAGE``: also change its config, rate limits, tags and permissions, and delete it.

An endpoint's creator gets ``CAN_MANAGE``; endpoints of the server's catalog (bundled and
catalog file) give ``users`` ``CAN_QUERY``. An alias has its target's list.

External models are fenced too (:class:`ExternalPolicy`): a config may reference only the
secret scopes its author was granted, and only ``openai_api_base`` values on the server's
allow-list, so a token holder cannot point an endpoint at its own URL with the server's key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ai_query.catalog import Endpoint
from ai_query.errors import ConfigError, PermissionDeniedError

#: Members manage every endpoint and may do everything.
ADMINS = "admins"
#: Every authenticated principal is a member.
USERS = "users"
#: Members may create endpoints.
CAN_CREATE_ENDPOINTS = "can_create_endpoints"
#: The base URL of an external model that sets no ``openai_api_base`` (the openai client's).
DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
#: The keys that name who an access control entry is for.
PRINCIPAL_KINDS: tuple[str, ...] = ("user_name", "group_name", "service_principal_name")

_SECRET_SCOPE = re.compile(r"^\{\{\s*secrets/([^/\s}]+)/[^/\s}]+\s*\}\}$")


class PermissionLevel(str, enum.Enum):
    """Databricks' serving-endpoint permission levels, weakest first."""

    CAN_VIEW = "CAN_VIEW"
    CAN_QUERY = "CAN_QUERY"
    CAN_MANAGE = "CAN_MANAGE"

    @property
    def rank(self) -> int:
        """Order of strength (higher includes the lower ones)."""
        return _RANKS[self]

    def covers(self, needed: PermissionLevel) -> bool:
        """Whether holding this level allows what ``needed`` allows."""
        return self.rank >= needed.rank


_RANKS = {PermissionLevel.CAN_VIEW: 1, PermissionLevel.CAN_QUERY: 2, PermissionLevel.CAN_MANAGE: 3}
_DESCRIPTIONS = {
    PermissionLevel.CAN_VIEW: "Can view the endpoint",
    PermissionLevel.CAN_QUERY: "Can view and query the endpoint",
    PermissionLevel.CAN_MANAGE: "Can view, query, update, set permissions on and delete the "
    "endpoint",
}


@dataclass(frozen=True, kw_only=True)
class Identity:
    """An authenticated caller."""

    name: str
    """The principal (user or service principal) name."""
    groups: frozenset[str] = frozenset()
    """Groups it belongs to (authenticated callers are always in ``users``)."""
    secret_scopes: frozenset[str] = frozenset()
    """Secret scopes its endpoint configs may reference."""

    @classmethod
    def of(
        cls, name: str, groups: Iterable[str] = (), secret_scopes: Iterable[str] = ()
    ) -> Identity:
        """An authenticated principal: ``groups`` plus ``users``."""
        return cls(
            name=name,
            groups=frozenset(groups) | {USERS},
            secret_scopes=frozenset(secret_scopes),
        )

    @property
    def is_admin(self) -> bool:
        """Member of ``admins``."""
        return ADMINS in self.groups

    @property
    def may_create(self) -> bool:
        """May create endpoints (admins and members of ``can_create_endpoints``)."""
        return self.is_admin or CAN_CREATE_ENDPOINTS in self.groups

    def may_use_scope(self, scope: str) -> bool:
        """May reference secrets of ``scope`` (admins: every scope)."""
        return self.is_admin or scope in self.secret_scopes


@dataclass(frozen=True)
class Grant:
    """One access control entry: a user, group or service principal and its level."""

    kind: str
    """``user_name``, ``group_name`` or ``service_principal_name``."""
    name: str
    """Who."""
    level: PermissionLevel
    """What they may do."""

    def applies_to(self, who: Identity) -> bool:
        """Whether this entry is about ``who`` (by name, or by one of its groups)."""
        if self.kind == "group_name":
            return self.name in who.groups
        return self.name == who.name


#: An endpoint's access control list.
ACL = tuple[Grant, ...]

#: The list of the server's catalog endpoints (bundled and catalog file).
CATALOG_ACL: ACL = (Grant("group_name", USERS, PermissionLevel.CAN_QUERY),)


def creator_acl(creator: str) -> ACL:
    """The list of a new endpoint: its creator manages it."""
    return (Grant("user_name", creator, PermissionLevel.CAN_MANAGE),)


def level_of(who: Identity, acl: ACL) -> PermissionLevel | None:
    """The strongest level ``who`` holds under ``acl`` (admins: ``CAN_MANAGE``; None: none)."""
    if who.is_admin:
        return PermissionLevel.CAN_MANAGE
    levels = [g.level for g in acl if g.applies_to(who)]
    return max(levels, key=lambda level: level.rank) if levels else None


def allows(who: Identity, acl: ACL, needed: PermissionLevel) -> bool:
    """Whether ``who`` holds ``needed`` (or more) under ``acl``."""
    held = level_of(who, acl)
    return held is not None and held.covers(needed)


def require(who: Identity, acl: ACL, needed: PermissionLevel, endpoint: str) -> None:
    """Raise unless ``who`` holds ``needed`` on ``endpoint``.

    Raises:
        PermissionDeniedError: naming the principal, the endpoint and the level needed.
    """
    if not allows(who, acl, needed):
        raise PermissionDeniedError(
            f"principal {who.name!r} does not have {needed.value} on serving endpoint {endpoint!r}"
        )


def require_create(who: Identity) -> None:
    """Raise unless ``who`` may create endpoints.

    Raises:
        PermissionDeniedError: naming the principal and the groups that may.
    """
    if not who.may_create:
        raise PermissionDeniedError(
            f"principal {who.name!r} may not create serving endpoints (it needs to be in "
            f"group {ADMINS!r} or {CAN_CREATE_ENDPOINTS!r})"
        )


def resolve_acl(name: str, acls: Mapping[str, ACL], aliases: Mapping[str, str]) -> ACL | None:
    """The list of endpoint (or alias) ``name``: an alias has its target's. None: unknown."""
    return acls.get(aliases.get(name, name))


# ---- wire shapes ------------------------------------------------------------------------------


def parse_acl(body: Any) -> ACL:
    """The grants of a Databricks permissions body ``{"access_control_list": [...]}``.

    Raises:
        ConfigError: naming the bad entry.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("access_control_list", []), list):
        raise ConfigError("the body must be {'access_control_list': [...]}")
    unknown = set(body) - {"access_control_list"}
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)}; expected access_control_list")
    grants = []
    for i, entry in enumerate(body.get("access_control_list", [])):
        where = f"access_control_list[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be an object")
        extra = set(entry) - {*PRINCIPAL_KINDS, "permission_level"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)}")
        named = [k for k in PRINCIPAL_KINDS if entry.get(k) is not None]
        if len(named) != 1 or not isinstance(entry[named[0]], str) or not entry[named[0]]:
            raise ConfigError(f"{where} needs exactly one of {', '.join(PRINCIPAL_KINDS)}")
        try:
            level = PermissionLevel(entry.get("permission_level"))
        except ValueError:
            raise ConfigError(
                f"{where}.permission_level must be one of "
                f"{', '.join(level.value for level in PermissionLevel)}"
            ) from None
        grants.append(Grant(named[0], entry[named[0]], level))
    return _dedupe(grants)


def merge(acl: ACL, added: ACL) -> ACL:
    """``acl`` with ``added`` (PATCH): an entry for the same principal replaces the old one."""
    return _dedupe([*acl, *added])


def _dedupe(grants: Iterable[Grant]) -> ACL:
    by_who: dict[tuple[str, str], Grant] = {}
    for grant in grants:
        by_who.pop((grant.kind, grant.name), None)
        by_who[(grant.kind, grant.name)] = grant
    return tuple(by_who.values())


def acl_to_data(acl: ACL) -> list[dict[str, str]]:
    """``acl`` as a Databricks request list (also how the store keeps it)."""
    return [{g.kind: g.name, "permission_level": g.level.value} for g in acl]


def acl_from_data(data: Any) -> ACL:
    """The inverse of :func:`acl_to_data`."""
    return parse_acl({"access_control_list": data})


def object_permissions(endpoint_id: str, acl: ACL) -> dict[str, Any]:
    """Databricks' ``ObjectPermissions`` answer for an endpoint.

    The ``admins`` group is listed with an inherited ``CAN_MANAGE``, as Databricks does.
    """
    entries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for grant in acl:
        entries.setdefault((grant.kind, grant.name), []).append(
            {"permission_level": grant.level.value, "inherited": False}
        )
    entries.setdefault(("group_name", ADMINS), []).append(
        {
            "permission_level": PermissionLevel.CAN_MANAGE.value,
            "inherited": True,
            "inherited_from_object": ["/serving-endpoints/"],
        }
    )
    return {
        "object_id": f"/serving-endpoints/{endpoint_id}",
        "object_type": "serving-endpoint",
        "access_control_list": [
            {kind: name, "all_permissions": perms} for (kind, name), perms in entries.items()
        ],
    }


def permission_levels() -> dict[str, Any]:
    """Databricks' ``permissionLevels`` answer."""
    return {
        "permission_levels": [
            {"permission_level": level.value, "description": _DESCRIPTIONS[level]}
            for level in PermissionLevel
        ]
    }


# ---- external models --------------------------------------------------------------------------


def normalise_base(url: str) -> str:
    """``url`` compared as scheme://host[:port]/path, lower-case host, no trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def external_bases(endpoints: Iterable[Endpoint]) -> set[str]:
    """The API bases the external models of ``endpoints`` use."""
    bases = set()
    for endpoint in endpoints:
        for entity in endpoint.config.served_entities:
            if entity.external_model is not None:
                base = entity.external_model.openai_config.openai_api_base
                bases.add(base or DEFAULT_OPENAI_BASE)
    return bases


@dataclass(frozen=True, kw_only=True)
class ExternalPolicy:
    """Which API bases and secret scopes endpoint configs may use."""

    allowed_bases: frozenset[str] = frozenset()
    """API bases non-admins may point external models at (normalised, see
    :func:`normalise_base`); a base also allows the URLs under its path."""

    @classmethod
    def of(cls, bases: Iterable[str]) -> ExternalPolicy:
        """A policy allowing ``bases``."""
        return cls(allowed_bases=frozenset(normalise_base(b) for b in bases))

    def base_allowed(self, base: str) -> bool:
        """Whether ``base`` is on the allow-list (or under an allowed path)."""
        wanted = normalise_base(base)
        return any(wanted == ok or wanted.startswith(ok + "/") for ok in self.allowed_bases)

    def check(self, who: Identity, endpoint: Endpoint) -> None:
        """Raise unless ``who`` may save ``endpoint``'s external models.

        Secret references must be in scopes ``who`` was granted (admins: any); API bases must
        be on the allow-list (admins may use any: they run the server).

        Raises:
            PermissionDeniedError: naming the scope or the base.
        """
        for entity in endpoint.config.served_entities:
            if entity.external_model is None:
                continue
            cfg = entity.external_model.openai_config
            for value in (cfg.openai_api_key, cfg.openai_organization):
                match = _SECRET_SCOPE.match((value or "").strip())
                if match and not who.may_use_scope(match.group(1)):
                    raise PermissionDeniedError(
                        f"principal {who.name!r} may not use secret scope {match.group(1)!r} "
                        f"(served entity {entity.served_name!r} of endpoint {endpoint.name!r})"
                    )
            base = cfg.openai_api_base or DEFAULT_OPENAI_BASE
            if not who.is_admin and not self.base_allowed(base):
                raise PermissionDeniedError(
                    f"openai_api_base {base!r} is not on this server's allow-list (served "
                    f"entity {entity.served_name!r} of endpoint {endpoint.name!r}); an "
                    "administrator can add it with --allow-external-base"
                )
