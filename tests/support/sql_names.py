"""What SQL text names through the search path, found with Postgres' own grammar (pglast).

Postgres resolves an unqualified function, operator, type or collation by searching the path,
and prefers an exact-type match in any schema on it to pg_catalog's polymorphic or cast-needing
one. So a name we leave unqualified is safe only where the path searched holds nothing a tenant
can create in: `pg_catalog, pg_temp` (pg_temp last is never searched for functions and
operators). `references()` lists every such name in a statement, a PL/pgSQL body (pglast parses
PL/pgSQL too) or a `format()` template's SQL, with its schema when qualified:
tests/unit/test_qualified_names.py and tests/security/test_installed_names.py check them, and
the hostile-tenant harness plants overloads of every unqualified one (tests/security/harness.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

# Our installer-only path: what our sessions and our functions search.
FIXED_PATH = ("pg_catalog", "pg_temp")


@dataclass(frozen=True, order=True)
class Reference:
    kind: str  # function, operator, type, collation, opclass
    name: str
    schema: str | None  # None: unqualified, found through the search path

    def __str__(self) -> str:
        return f"{self.kind} {self.schema + '.' if self.schema else ''}{self.name}"


@dataclass
class Found:
    """References in some SQL, and the pieces that could not be parsed (format() templates whose
    placeholders stand for more than a name or a literal)."""

    references: set[Reference]
    unparsed: list[str]

    def __init__(self) -> None:
        self.references = set()
        self.unparsed = []

    def add(self, other: Found) -> None:
        self.references |= other.references
        self.unparsed += other.unparsed

    def unqualified(self) -> set[Reference]:
        """The names found through the search path (not those a template's placeholder stands
        for, which the code fills in: checked where the generated code is installed)."""
        return {r for r in self.references if r.schema is None and not placeholder(r)}


def _names(nodes: Any) -> tuple[str | None, str]:
    names = [str(n.sval) for n in nodes or () if isinstance(n, ast.String)]
    if not names:
        return None, "?"
    return (names[-2] if len(names) > 1 else None), names[-1]


def _ref(kind: str, nodes: Any) -> Reference:
    schema, name = _names(nodes)
    return Reference(kind, name, schema)


def _walk(node: Any, found: Found) -> None:  # noqa: PLR0912 (one case per kind of node)
    if isinstance(node, tuple | list):
        for item in node:
            _walk(item, found)
        return
    if not isinstance(node, ast.Node):
        return
    refs = found.references
    if isinstance(node, ast.FuncCall):
        refs.add(_ref("function", node.funcname))
    elif isinstance(node, ast.A_Expr):
        schema, name = _names(node.name)
        if name.endswith("BETWEEN"):
            refs |= {Reference("operator", op, schema) for op in (">=", "<=")}
        else:
            refs.add(Reference("operator", name, schema))
    elif isinstance(node, ast.SubLink):
        if node.operName:
            refs.add(_ref("operator", node.operName))
        elif node.subLinkType == enums.SubLinkType.ANY_SUBLINK:  # x IN (SELECT ...)
            refs.add(Reference("operator", "=", None))
    elif isinstance(node, ast.CaseExpr) and node.arg is not None:  # CASE x WHEN v: x = v
        refs.add(Reference("operator", "=", None))
    elif isinstance(node, ast.SortBy) and node.useOp:
        refs.add(_ref("operator", node.useOp))
    elif isinstance(node, ast.TypeName) and not node.pct_type:
        refs.add(_ref("type", node.names))
    elif isinstance(node, ast.CollateClause):
        refs.add(_ref("collation", node.collname))
    elif isinstance(node, ast.IndexElem) and node.opclass:
        refs.add(_ref("opclass", node.opclass))
    elif isinstance(node, ast.ObjectWithArgs) and node.objname:
        refs.add(_ref("function", node.objname))
    for attr in node:
        _walk(getattr(node, attr), found)


def placeholder(ref: Reference) -> bool:
    """A name rendered from a format() or compose placeholder (render_template)."""
    return "x_" in ref.name or ref.schema == "x_"


# format() placeholders: %I, %L, %s, with a position (%1$I) or width; and embeddings_internal.render()'s
# named ones, %(name)I, %(name)L, %(name)s (sql/26_render.sql).
_PLACEHOLDER = re.compile(r"%(?:\(\w+\)|(\d+)\$)?-?\d*([ILs%])")


def render_template(template: str) -> str:
    """A format() template as SQL, each placeholder a plain name or literal: %I a name, %L a
    literal, %s a name (what most of ours stand for)."""

    def one(m: re.Match[str]) -> str:
        return {"I": "x_", "L": "'x'", "s": "x_", "%": "%"}[m.group(2)]

    return _PLACEHOLDER.sub(one, template)


def references(sql: str, *, template: bool = False) -> Found:
    """Every function, operator, type, collation and operator class `sql` names (statements
    separated by semicolons), the bodies of the functions it creates and the DO blocks it runs
    included, and the SQL of the format() templates in them, as far as it parses."""
    found = Found()
    text = render_template(sql) if template else sql
    try:
        statements = pglast.parse_sql(text)
    except ParseError:
        found.unparsed.append(sql)
        return found
    for raw in statements:
        stmt = raw.stmt
        found.add(_statement(stmt, text, raw))
    return found


def _statement(stmt: Any, text: str, raw: Any) -> Found:
    found = Found()
    if isinstance(stmt, ast.CreateFunctionStmt):
        header = ast.CreateFunctionStmt(**{a: getattr(stmt, a) for a in stmt})
        header.options = tuple(o for o in stmt.options or () if o.defname != "as")
        _walk(header, found)
        found.add(function_body(create_function_text(stmt, text, raw)))
        return found
    if isinstance(stmt, ast.DoStmt):
        body = next(str(o.arg.sval) for o in stmt.args or () if o.defname == "as")
        found.add(plpgsql_references(_as_function(body)))
        return found
    _walk(stmt, found)
    found.add(_templates(stmt))
    return found


def create_function_text(stmt: ast.CreateFunctionStmt, text: str, raw: Any) -> str:
    """The statement's own text (pglast gives its location and length in `text`, in
    characters; a length of 0 is the rest of the text)."""
    start = raw.stmt_location or 0
    return text[start : start + raw.stmt_len] if raw.stmt_len else text[start:]


def function_language(stmt: ast.CreateFunctionStmt) -> str:
    for option in stmt.options or ():
        if option.defname == "language":
            return str(option.arg.sval).lower()
    return "sql"


def function_search_path(stmt: ast.CreateFunctionStmt) -> tuple[str, ...] | None:
    """The schemas of the function's SET search_path; None without one; ("FROM CURRENT",) for
    SET search_path FROM CURRENT."""
    for option in stmt.options or ():
        if option.defname == "set" and option.arg.name == "search_path":
            if option.arg.kind == enums.VariableSetKind.VAR_SET_CURRENT:
                return ("FROM CURRENT",)
            return tuple(str(a.val.sval) for a in option.arg.args or ())
    return None


def function_body_text(stmt: ast.CreateFunctionStmt) -> str | None:
    for option in stmt.options or ():
        if option.defname == "as":
            return str(option.arg[0].sval)
    return None


def function_body(create_function: str) -> Found:
    """The references of a CREATE FUNCTION's body: SQL, or PL/pgSQL."""
    stmt = pglast.parse_sql(create_function)[0].stmt
    assert isinstance(stmt, ast.CreateFunctionStmt)
    body = function_body_text(stmt)
    if body is None:  # BEGIN ATOMIC: a parsed body
        found = Found()
        _walk(stmt.sql_body, found)
        return found
    language = function_language(stmt)
    if language == "plpgsql":
        return plpgsql_references(create_function)
    if language == "sql":
        return references(body)
    return Found()  # C, internal


def _as_function(body: str) -> str:
    quote = "$do_body$"
    return (
        f"CREATE FUNCTION pg_temp.do_block() RETURNS void LANGUAGE plpgsql AS {quote}{body}{quote}"
    )


# pglast's PL/pgSQL parser looks declared types' schemas up, and knows pg_catalog and public
# only: ours are spelled as public.<schema>__ for it, and back in what it returns.
_SCHEMA = re.compile(r"\b(embeddings_internal|embeddings|pgmq)\.")
_UNSCHEMA = re.compile(r"\bpublic\.(embeddings_internal|embeddings|pgmq)__")

_ROW_ARRAY = re.compile(r"\b(?:embeddings_internal|embeddings|pgmq)\.\w+\[\]")
_VECTOR_TYPES = re.compile(r"\b(?:\w+\.)?(?:halfvec|vector|sparsevec)\b")

_ASSIGNED = re.compile(r"^\s*[\w\".\[\]]+(?:\s*\[[^\]]*\])*\s*:?=\s*", re.S)


def plpgsql_references(create_function: str) -> Found:
    """The references of a PL/pgSQL function: each embedded expression and statement (pglast's
    PL/pgSQL parser), and the format() templates among them."""
    found = Found()
    head, as_, body = create_function.partition("$")  # the signature: up to the body's quote
    head = _VECTOR_TYPES.sub("text", head)  # (pglast's parser knows no pgvector type)
    try:
        text = _ROW_ARRAY.sub("text[]", head + as_ + body)  # (nor arrays of a row type)
        tree = pglast.parse_plpgsql(_SCHEMA.sub(r"public.\1__", text))
    except ParseError:
        found.unparsed.append(create_function)
        return found
    for kind, value in _plpgsql_nodes(tree):
        if kind == "PLpgSQL_expr":
            query, mode = _UNSCHEMA.sub(r"\1.", value["query"]), value.get("parseMode", 0)
            if mode in (3, 4, 5):  # an assignment: `x := expression`
                query = "SELECT " + _ASSIGNED.sub("", query, count=1)
            elif mode != 0:
                query = "SELECT " + query
            found.add(references(query))
    return found


def _plpgsql_nodes(tree: Any) -> Iterator[tuple[str, Any]]:
    """The expressions and statements of a PL/pgSQL tree. Not its variables' declared types:
    pglast's parser gives them resolved by their internal names, schema dropped."""
    if isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_nodes(item)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if key == "PLpgSQL_expr":
                yield key, value
            if key != "datatype":  # (pglast gives declared types as resolved, unqualified)
                yield from _plpgsql_nodes(value)


def _templates(stmt: Any) -> Found:
    """The SQL of format() and embeddings_internal.render() templates in `stmt`: the first argument of
    each such call, when a string constant."""
    found = Found()
    for call in [*_calls(stmt, "format"), *_calls(stmt, "render")]:
        first = call.args[0] if call.args else None
        if isinstance(first, ast.A_Const) and isinstance(first.val, ast.String):
            template = str(first.val.sval)
            if _looks_like_sql(template):
                found.add(references(template, template=True))
    return found


def _calls(node: Any, name: str) -> Iterator[ast.FuncCall]:
    if isinstance(node, tuple | list):
        for item in node:
            yield from _calls(item, name)
        return
    if not isinstance(node, ast.Node):
        return
    if isinstance(node, ast.FuncCall) and _names(node.funcname)[1] == name:
        yield node
    for attr in node:
        yield from _calls(getattr(node, attr), name)


_SQL_START = re.compile(
    r"^\s*(SELECT|WITH|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|GRANT|REVOKE|COMMENT|TRUNCATE|LOCK)\b",
    re.I,
)


def _looks_like_sql(template: str) -> bool:
    return bool(_SQL_START.match(template))
