"""Our functions do in a session with odd settings what they do with the defaults.

A table's writers run our triggers, and operators call watch(), sweep() and the rest, in their
own sessions, with whatever settings those have: an application's legacy
standard_conforming_strings, a DBA's quote_all_identifiers, German dates, an empty search path.
Our functions' bodies are parsed and run under them (a SET clause on the function changes only
what it names: search_path, and standard_conforming_strings where pgmq's functions are called).
For each setting below, the same steps as with the defaults, on a target of every kind: the
writes (each kind's triggers), the searches, the status views, watching a new table with
full-text search, sweep(), verify() and unwatch(): each succeeds, or fails, as with the
defaults, with the same answer. This found watch() failing under quote_all_identifiers (a
generated trigger's name quoted in part) and under standard_conforming_strings = off (pgmq's
format_table_name), and hybrid search failing under the latter (a plain '\\' of ours).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.security.conftest import Roles
from tests.security.every_kind import install_every_kind
from tests.support.models import MINILM

Conn = psycopg.Connection[Any]

SETTINGS = [
    ("standard_conforming_strings = off", "escape_string_warning = off"),
    ("quote_all_identifiers = on",),
    ("DateStyle = 'German, DMY'",),
    ("DateStyle = 'SQL, MDY'", "IntervalStyle = 'sql_standard'"),
    ("IntervalStyle = 'iso_8601'",),
    ("TimeZone = 'Pacific/Chatham'",),
    ("extra_float_digits = -15",),
    ("bytea_output = 'escape'",),
    ("transform_null_equals = on",),
    ("array_nulls = off",),
    ("default_text_search_config = 'simple'",),
    ("search_path = ''",),
    ("plan_cache_mode = force_generic_plan",),
    ("enable_seqscan = off", "enable_indexscan = off"),
    ("default_transaction_isolation = 'serializable'",),
    ("row_security = off",),  # a policy that would filter is an error, not a silent bypass
    # Every query through parallel workers: a function marked PARALLEL SAFE that is not fails.
    ("force_parallel_mode = on", "parallel_setup_cost = 0", "parallel_tuple_cost = 0"),
]
VECTOR = "[" + ",".join(["0.05"] * 384) + "]"


def _step(conn: Conn, sql: str, args: tuple[Any, ...] = ()) -> str:
    """What `sql` answered: its rows (or row count), or the error's class."""
    try:
        cur = conn.execute(sql, args)
        return f"ok {cur.fetchall() if cur.description else cur.rowcount}"
    except psycopg.Error as exc:
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def steps(roles: Roles, settings: tuple[str, ...], n: int) -> dict[str, str]:
    """The steps in sessions with `settings`: the owner's writes (keys from `n` on), then the
    superuser's searches and operations (a new table probe_`n`)."""
    found = {}
    with roles.connect(roles.owner) as owner:
        for setting in settings:
            owner.execute(f"SET {setting}")
        writes = {
            "plain": f"INSERT INTO public.docs_plain VALUES ({n}, 'a.b c\\d')",
            "composite": f"INSERT INTO public.docs_composite VALUES ('r', {n}, 'x y')",
            "side": f"INSERT INTO public.docs_side VALUES ({n}, 'x y')",
            "chunked": f"INSERT INTO public.docs_chunked VALUES ({n}, 'x y z')",
            "function": f"INSERT INTO public.docs_function VALUES ({n}, 'x y z')",
            "documents": f"INSERT INTO public.docs_documents VALUES ({n}, '\\x2320540a0a62')",
            "update": f"UPDATE public.docs_plain SET body = 'changed' WHERE id = {n}",
            "delete": f"DELETE FROM public.docs_side WHERE id = {n}",
        }
        for name, sql in writes.items():
            found[f"write {name}"] = _step(owner, sql)
    with roles.connect() as su:
        for setting in settings:
            su.execute(f"SET {setting}")
        searches = {
            "search": "embeddings.search('public.docs_side', %s::public.halfvec, 5)",
            "hybrid any": "embeddings.hybrid_search('public.docs_side', 'x y', %s::public.halfvec, 5)",
            "hybrid all": "embeddings.hybrid_search('public.docs_side', 'x y', %s::public.halfvec,"
            " 5, text_match => 'all')",
            "search chunked": "embeddings.search('public.docs_chunked', %s::public.halfvec, 5)",
        }
        for name, call in searches.items():
            found[name] = _step(su, f"SELECT count(*) FROM {call}", (VECTOR,))
        for view in ("status", "status_exact", "stopped", "document_progress", "verification"):
            found[view] = _step(su, f"SELECT count(*) FROM embeddings.{view}")
        operations = {
            "create": f"CREATE TABLE public.probe_{n} (id int PRIMARY KEY, body text)",
            "watch": f"SELECT embeddings.watch('public.probe_{n}', 'body', model => %s) > 0",
            "enable_fts": f"SELECT count(*) FROM embeddings.enable_fts('public.probe_{n}', 'english')",
            "write": f"INSERT INTO public.probe_{n} VALUES (1, 'hello world')",
            "sweep": "SELECT count(*) FROM embeddings.sweep()",
            "verify": "SELECT count(*) FROM embeddings.verify()",
            "unwatch": f"SELECT count(*) FROM embeddings.unwatch('public.probe_{n}')",
        }
        for name, sql in operations.items():
            found[name] = _step(su, sql, (MINILM,) if "%s" in sql else ())
    return found


@pytest.mark.slow
def test_every_step_answers_under_odd_settings_as_under_the_defaults(roles: Roles) -> None:
    install_every_kind(roles)
    defaults = steps(roles, (), 1000)
    assert not [s for s in defaults.values() if s.startswith("failed")], defaults
    different = {}
    for i, settings in enumerate(SETTINGS, start=1):
        found = steps(roles, settings, 1000 + 10 * i)
        for step, answer in found.items():
            if answer != defaults[step]:
                different[f"{', '.join(settings)}: {step}"] = answer
    assert different == {}
