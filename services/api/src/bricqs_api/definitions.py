# mypy: disable-error-code="valid-type,attr-defined"
# (request bodies are typed by each kind's schema, a variable here; Litestar reads it)
"""Definition CRUD under /api/v1/gamify/admin/{points-rules,badges,challenges,streaks,
leaderboards,tiers}: create, list, get, update (full replace) and archive, by `code`.

One set of five handlers per kind, made by `definition_router`; the schema of each kind
types its request bodies, so the OpenAPI document describes every definition.
"""

from typing import Any

import msgspec
from litestar import Router, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody

from bricqs.mechanics.definitions import KINDS, Challenge, Definition, semantic_errors
from bricqs.storage.definitions import (
    DefinitionRow,
    create_definition,
    get_definition,
    list_definitions,
    update_definition,
)
from bricqs.storage.tenants import Tenant
from bricqs.validation import FieldError
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, ApiContext, CodePath


def definition_body(row: DefinitionRow) -> dict[str, Any]:
    """A stored definition as the API shows it: its fields plus version and times."""
    return {
        **row.body,
        "status": row.status,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _not_found(segment: str, code: str) -> ProblemError:
    return ProblemError(404, "definition_not_found", f"No {segment} definition with code {code!r}.")


async def _check(ctx: ApiContext, tenant: Tenant, definition: Definition) -> None:
    errors = semantic_errors(definition)
    if isinstance(definition, Challenge) and definition.reward and definition.reward.badge:
        async with ctx.pool.connection() as conn:
            badge = await get_definition(conn, tenant, "badge", definition.reward.badge)
        if badge is None:
            errors.append(
                FieldError("reward.badge", "no badge with this code", "unknown_reference")
            )
    if errors:
        raise ProblemError(422, "validation_failed", "The definition is invalid.", errors=errors)


def definition_router(segment: str, kind: str, schema: type[Definition]) -> Router:
    """The five routes of one kind of definition."""
    label = schema.__name__

    @post(
        "/",
        responses=PROBLEMS,
        status_code=201,
        operation_id=f"create{label}",
        summary=f"Create a {segment} definition",
    )
    async def create(
        data: JSONBody[schema],
        ctx: NamedDependency[ApiContext],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        await _check(ctx, tenant, data)
        body = msgspec.json.encode(data).decode()
        async with ctx.pool.connection() as conn:
            row = await create_definition(conn, tenant, kind, data.code, data.status, body)
        if row is None:
            raise ProblemError(
                409, "definition_exists", f"A {segment} definition {data.code!r} exists."
            )
        return definition_body(row)

    @get(
        "/", responses=PROBLEMS, operation_id=f"list{label}s", summary=f"List {segment} definitions"
    )
    async def list_all(
        ctx: NamedDependency[ApiContext],
        tenant: NamedDependency[Tenant],
        include_archived: FromQuery[bool] = False,
    ) -> dict[str, Any]:
        async with ctx.pool.connection() as conn:
            rows = await list_definitions(conn, tenant, kind, include_archived=include_archived)
        return {"items": [definition_body(row) for row in rows]}

    @get(
        "/{code:str}",
        responses=PROBLEMS,
        operation_id=f"get{label}",
        summary=f"Get a {segment} definition",
    )
    async def get_one(
        code: CodePath, ctx: NamedDependency[ApiContext], tenant: NamedDependency[Tenant]
    ) -> dict[str, Any]:
        async with ctx.pool.connection() as conn:
            row = await get_definition(conn, tenant, kind, code)
        if row is None:
            raise _not_found(segment, code)
        return definition_body(row)

    @put(
        "/{code:str}",
        responses=PROBLEMS,
        operation_id=f"update{label}",
        summary=f"Replace a {segment} definition",
    )
    async def update(
        code: CodePath,
        data: JSONBody[schema],
        ctx: NamedDependency[ApiContext],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        if data.code != code:
            raise ProblemError(
                422,
                "validation_failed",
                "The code cannot change.",
                errors=[FieldError("code", f"must be {code!r}", "immutable")],
            )
        await _check(ctx, tenant, data)
        body = msgspec.json.encode(data).decode()
        async with ctx.pool.connection() as conn:
            row = await update_definition(conn, tenant, kind, code, data.status, body)
        if row is None:
            raise _not_found(segment, code)
        return definition_body(row)

    @delete(
        "/{code:str}",
        responses=PROBLEMS,
        status_code=200,
        operation_id=f"archive{label}",
        summary=f"Archive a {segment} definition (it stops applying; history stays)",
    )
    async def archive(
        code: CodePath, ctx: NamedDependency[ApiContext], tenant: NamedDependency[Tenant]
    ) -> dict[str, Any]:
        async with ctx.pool.connection() as conn:
            row = await get_definition(conn, tenant, kind, code)
            if row is None:
                raise _not_found(segment, code)
            body = msgspec.json.encode({**row.body, "status": "archived"}).decode()
            updated = await update_definition(conn, tenant, kind, code, "archived", body)
        assert updated is not None
        return definition_body(updated)

    return Router(
        path=f"/admin/{segment}",
        route_handlers=[create, list_all, get_one, update, archive],
        tags=["definitions"],
    )


definition_routers = [
    definition_router(segment, kind, schema) for segment, (kind, schema) in KINDS.items()
]
