"""Definitions: every mechanic listed with its status; a JSON editor that creates and
replaces them through the api's own validation, showing each field error by its path;
pause, resume and archive; a preview of what the editor's draft would have done over a
participant's last facts (read only: see bricqs.mechanics.preview)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter
from litestar.response import Redirect

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS, Definition
from bricqs.mechanics.preview import MAX_FACTS, preview
from bricqs.schemas import Fact
from bricqs.storage.definitions import (
    DefinitionRow,
    create_definition,
    get_definition,
    list_definitions,
    update_definition,
)
from bricqs.storage.facts import list_facts
from bricqs.storage.tenants import Conn, Tenant
from bricqs.validation import FieldError
from bricqs.web.problems import ProblemError
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn, require
from bricqs_api.console.signin import Form
from bricqs_api.context import CodePath
from bricqs_api.definitions import check_definition

Segment = Annotated[str, PathParameter(pattern=r"^[a-z][a-z\-]{0,31}$")]
SEGMENT_BY_KIND = {kind: segment for segment, (kind, _) in KINDS.items()}
STATUS_ACTIONS = {"pause": "paused", "resume": "active", "archive": "archived"}
STARTER = '{\n  "code": "",\n  "name": ""\n}'
PARTICIPANT_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")  # as the api's ParticipantPath
DEFAULT_PREVIEW_FACTS = 100


def _kind(segment: str) -> tuple[str, type[Definition]]:
    if segment not in KINDS:
        raise NotFoundException(f"No kind of definition {segment!r}.")
    return KINDS[segment]


async def _stored(conn: Conn, tenant: Tenant, segment: str, code: str) -> DefinitionRow:
    """A stored definition; 404 when there is none."""
    row = await get_definition(conn, tenant, _kind(segment)[0], code)
    if row is None:
        raise NotFoundException(f"No {segment} definition {code!r}.")
    return row


async def _validated(
    conn: Conn, tenant: Tenant, segment: Segment, text: str
) -> Definition | list[FieldError]:
    """The definition in `text`, judged as the definitions api judges a request body."""
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return [FieldError("body", f"not JSON: {exc}", "invalid_json")]
    parsed = parse_definition(_kind(segment)[1], raw)
    if isinstance(parsed, list):
        return parsed
    try:
        await check_definition(conn, tenant, parsed)
    except ProblemError as exc:
        return exc.errors
    return parsed


class DefinitionPages(Controller):
    """List, edit and change the status of the tenant's mechanics."""

    path = "/definitions"
    include_in_schema = False

    @get("/")
    async def definitions(
        self, request: Request[Any, Any, Any], user: SignedIn, conn: NamedDependency[Conn]
    ) -> Response[str]:
        """Every definition of every kind, with its status."""
        rows = await list_definitions(conn, user.tenant)
        by_segment: dict[str, list[Any]] = {segment: [] for segment in KINDS}
        for row in rows:
            by_segment[SEGMENT_BY_KIND[row.kind]].append(row)
        return page(request, "definitions.html", user=user, by_segment=by_segment)

    @get("/{segment:str}/new")
    async def new_definition(
        self, request: Request[Any, Any, Any], segment: Segment, user: SignedIn
    ) -> Response[str]:
        """An empty editor for one kind."""
        _kind(segment)
        return _editor(request, user, segment, None, STARTER, [])

    @get("/{segment:str}/{code:str}")
    async def edit_definition(
        self,
        request: Request[Any, Any, Any],
        segment: Segment,
        code: CodePath,
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[str]:
        """The editor, holding the stored definition."""
        row = await _stored(conn, user.tenant, segment, code)
        text = msgspec.json.format(msgspec.json.encode(row.body), indent=2).decode()
        return _editor(request, user, segment, row, text, [])

    @post("/{segment:str}", status_code=200)
    async def create(
        self,
        request: Request[Any, Any, Any],
        segment: Segment,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[Any]:
        """Create from the editor's JSON, or show the editor again with its field errors."""
        require(user, "admin")
        text = data.get("definition", "")
        checked = await _validated(conn, user.tenant, segment, text)
        if isinstance(checked, list):
            return _editor(request, user, segment, None, text, checked)
        body = msgspec.json.encode(checked).decode()
        kind = _kind(segment)[0]
        row = await create_definition(conn, user.tenant, kind, checked.code, checked.status, body)
        if row is None:
            taken = [FieldError("code", "a definition with this code exists", "exists")]
            return _editor(request, user, segment, None, text, taken)
        return Redirect(f"/console/definitions/{segment}/{checked.code}", status_code=303)

    @post("/{segment:str}/{code:str}", status_code=200)
    async def update(
        self,
        request: Request[Any, Any, Any],
        segment: Segment,
        code: CodePath,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[Any]:
        """Replace from the editor's JSON (the code cannot change)."""
        require(user, "admin")
        row = await _stored(conn, user.tenant, segment, code)
        text = data.get("definition", "")
        checked = await _validated(conn, user.tenant, segment, text)
        if not isinstance(checked, list) and checked.code != code:
            checked = [FieldError("code", f"must be {code!r}", "immutable")]
        if isinstance(checked, list):
            return _editor(request, user, segment, row, text, checked)
        body = msgspec.json.encode(checked).decode()
        await update_definition(conn, user.tenant, row.kind, code, checked.status, body)
        return Redirect(f"/console/definitions/{segment}/{code}", status_code=303)

    @post("/preview/{segment:str}", status_code=200)
    async def preview_draft(
        self,
        request: Request[Any, Any, Any],
        segment: Segment,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[str]:
        """What the editor's draft would have done over a participant's last facts: it is
        judged like a save, then evaluated in memory; nothing is written."""
        text = data.get("definition", "")
        participant = data.get("participant", "")
        stored = await get_definition(conn, user.tenant, _kind(segment)[0], data.get("code", ""))
        checked = await _validated(conn, user.tenant, segment, text)
        errors = checked if isinstance(checked, list) else []
        if not PARTICIPANT_ID.match(participant):
            errors.append(FieldError("participant", "a participant id is needed", "required"))
        count = int(data["facts"]) if data.get("facts", "").isdigit() else DEFAULT_PREVIEW_FACTS
        if not 1 <= count <= MAX_FACTS:
            errors.append(FieldError("facts", f"from 1 to {MAX_FACTS}", "out_of_range"))
        if errors or isinstance(checked, list):
            return _editor(request, user, segment, stored, text, errors, participant, count)
        rows = await list_facts(
            conn, user.tenant, participant, after=None, fact_type=None, limit=count
        )
        facts = [
            Fact(
                fact_id=row.fact_id,
                fact_type=row.fact_type,
                project_id=user.tenant.project_id,
                environment=user.tenant.environment,
                participant_id=participant,
                event_id=row.event_id,
                properties=row.properties,
                occurred_at=row.occurred_at,
            )
            for row in rows
        ]
        return _editor(
            request,
            user,
            segment,
            stored,
            text,
            [],
            participant,
            count,
            outcome=preview(checked, facts),
            read=len(facts),
        )

    @post("/{segment:str}/{code:str}/status", status_code=303)
    async def change_status(
        self,
        segment: Segment,
        code: CodePath,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[Any]:
        """Pause, resume or archive: the body keeps every field but its status."""
        require(user, "admin")
        status = STATUS_ACTIONS.get(data.get("action", ""))
        row = await _stored(conn, user.tenant, segment, code)
        if status is None:
            raise NotFoundException(f"No action {data.get('action')!r}.")
        body = msgspec.json.encode({**row.body, "status": status}).decode()
        await update_definition(conn, user.tenant, row.kind, code, status, body)
        return Redirect("/console/definitions", status_code=303)


def _editor(
    request: Request[Any, Any, Any],
    user: Any,
    segment: Segment,
    row: Any,
    text: str,
    errors: list[FieldError],
    participant: str = "",
    facts: int = DEFAULT_PREVIEW_FACTS,
    **shown: Any,
) -> Response[str]:
    return page(
        request,
        "definition_editor.html",
        status_code=422 if errors else 200,
        user=user,
        segment=segment,
        row=row,
        text=text,
        errors=errors,
        actions=STATUS_ACTIONS,
        participant=participant,
        facts=facts,
        max_facts=MAX_FACTS,
        **shown,
    )
