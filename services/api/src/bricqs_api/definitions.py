# mypy: disable-error-code="valid-type,attr-defined"
# (request bodies are typed by each kind's schema, a variable here; Litestar reads it)
"""Definition CRUD under /api/v1/gamify/admin/{points-rules,badges,challenges,streaks,
leaderboards,tiers}: create, list, get, update (full replace) and archive, by `code`.

One controller of five handlers per kind, made by `definition_controller`; the schema of each kind
types its request bodies, so the OpenAPI document describes every definition.
"""

from typing import Any

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody

from bricqs.mechanics.definition_checks import semantic_errors
from bricqs.mechanics.definitions import KINDS, Challenge, Definition
from bricqs.storage.definitions import (
    DefinitionRow,
    create_definition,
    get_definition,
    list_definitions,
    update_definition,
)
from bricqs.storage.tenants import Conn, Tenant
from bricqs.validation import FieldError
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, CodePath


def definition_body(row: DefinitionRow) -> dict[str, Any]:
    """A stored definition as the API shows it: its fields plus version and times."""
    return {
        **row.body,
        "status": row.status,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _found(row: DefinitionRow | None, segment: str, code: str) -> DefinitionRow:
    if row is None:
        raise ProblemError(
            404, "definition_not_found", f"No {segment} definition with code {code!r}."
        )
    return row


async def check_definition(conn: Conn, tenant: Tenant, definition: Definition) -> None:
    """422 with field errors for a definition that breaks a rule beyond its types."""
    errors = semantic_errors(definition)
    if isinstance(definition, Challenge) and definition.reward and definition.reward.badge:
        badge = await get_definition(conn, tenant, "badge", definition.reward.badge)
        if badge is None:
            errors.append(
                FieldError("reward.badge", "no badge with this code", "unknown_reference")
            )
    if errors:
        raise ProblemError(422, "validation_failed", "The definition is invalid.", errors=errors)


def definition_controller(segment: str, kind: str, schema: type[Definition]) -> type[Controller]:
    """The five routes of one kind of definition."""
    label = schema.__name__

    class DefinitionController(Controller):
        path = f"/admin/{segment}"
        tags = ("definitions",)
        security = requires("admin")

        @post(
            "/",
            responses=PROBLEMS,
            status_code=201,
            operation_id=f"create{label}",
            summary=f"Create a {segment} definition",
        )
        async def create(
            self,
            data: JSONBody[schema],
            conn: NamedDependency[Conn],
            tenant: NamedDependency[Tenant],
        ) -> dict[str, Any]:
            await check_definition(conn, tenant, data)
            body = msgspec.json.encode(data).decode()
            row = await create_definition(conn, tenant, kind, data.code, data.status, body)
            if row is None:
                raise ProblemError(
                    409, "definition_exists", f"A {segment} definition {data.code!r} exists."
                )
            return definition_body(row)

        @get(
            "/",
            responses=PROBLEMS,
            operation_id=f"list{label}s",
            summary=f"List {segment} definitions",
        )
        async def list_all(
            self,
            conn: NamedDependency[Conn],
            tenant: NamedDependency[Tenant],
            include_archived: FromQuery[bool] = False,
        ) -> dict[str, Any]:
            rows = await list_definitions(conn, tenant, kind, include_archived=include_archived)
            return {"items": [definition_body(row) for row in rows]}

        @get(
            "/{code:str}",
            responses=PROBLEMS,
            operation_id=f"get{label}",
            summary=f"Get a {segment} definition",
        )
        async def get_one(
            self, code: CodePath, conn: NamedDependency[Conn], tenant: NamedDependency[Tenant]
        ) -> dict[str, Any]:
            row = await get_definition(conn, tenant, kind, code)
            return definition_body(_found(row, segment, code))

        @put(
            "/{code:str}",
            responses=PROBLEMS,
            operation_id=f"update{label}",
            summary=f"Replace a {segment} definition",
        )
        async def update(
            self,
            code: CodePath,
            data: JSONBody[schema],
            conn: NamedDependency[Conn],
            tenant: NamedDependency[Tenant],
        ) -> dict[str, Any]:
            if data.code != code:
                raise ProblemError(
                    422,
                    "validation_failed",
                    "The code cannot change.",
                    errors=[FieldError("code", f"must be {code!r}", "immutable")],
                )
            await check_definition(conn, tenant, data)
            body = msgspec.json.encode(data).decode()
            row = await update_definition(conn, tenant, kind, code, data.status, body)
            return definition_body(_found(row, segment, code))

        @delete(
            "/{code:str}",
            responses=PROBLEMS,
            status_code=200,
            operation_id=f"archive{label}",
            summary=f"Archive a {segment} definition (it stops applying; history stays)",
        )
        async def archive(
            self, code: CodePath, conn: NamedDependency[Conn], tenant: NamedDependency[Tenant]
        ) -> dict[str, Any]:
            row = _found(await get_definition(conn, tenant, kind, code), segment, code)
            body = msgspec.json.encode({**row.body, "status": "archived"}).decode()
            updated = await update_definition(conn, tenant, kind, code, "archived", body)
            assert updated is not None  # the row exists: this transaction read it
            return definition_body(updated)

    DefinitionController.__name__ = f"{label}Controller"
    return DefinitionController


definition_controllers = [
    definition_controller(segment, kind, schema) for segment, (kind, schema) in KINDS.items()
]
