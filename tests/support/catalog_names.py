"""What our SQL names unqualified: pg_catalog's, each (tests/unit/test_qualified_names.py).

Our sessions and functions search pg_catalog only (then pg_temp, never searched for functions
and operators), so these resolve into pg_catalog whatever a tenant creates; the hostile-tenant
harness plants an exact-type overload of every function and operator here in a schema named
after each role we connect as and in `public` (tests/security/harness.py), and
tests/security/test_installed_names.py checks each is pg_catalog's on the server. A name our SQL
starts to use unqualified is added here, in one line.
"""

from __future__ import annotations

_FUNCTIONS = (
    "aclexplode",
    "array_agg",
    "array_remove",
    "array_to_string",
    "bool_and",
    "btrim",
    "cardinality",
    "clock_timestamp",
    "concat_ws",
    "count",
    "current_database",
    "current_setting",
    "date_trunc",
    "family",
    "format",
    "format_type",
    "generate_series",
    "has_function_privilege",
    "has_table_privilege",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_query_array",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "left",
    "length",
    "lower",
    "ltrim",
    "make_interval",
    "max",
    "md5",
    "min",
    "now",
    "obj_description",
    "parse_ident",
    "pg_backend_pid",
    "pg_current_snapshot",
    "pg_describe_object",
    "pg_event_trigger_ddl_commands",
    "pg_event_trigger_dropped_objects",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "pg_has_role",
    "pg_partition_ancestors",
    "pg_partition_tree",
    "pg_sleep",
    "pg_stat_get_analyze_count",
    "pg_stat_get_autoanalyze_count",
    "pg_stat_get_autovacuum_count",
    "pg_stat_get_live_tuples",
    "pg_stat_get_tuples_deleted",
    "pg_stat_get_tuples_inserted",
    "pg_stat_get_vacuum_count",
    "quote_ident",
    "quote_literal",
    "random",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "repeat",
    "replace",
    "round",
    "row_number",
    "rtrim",
    "set_config",
    "split_part",
    "starts_with",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "sum",
    "to_char",
    "to_jsonb",
    "to_regclass",
    "to_regnamespace",
    "to_regproc",
    "to_regprocedure",
    "to_regtype",
    "tsvector_to_array",
    "unnest",
)
_OPERATORS = (
    "!~",
    "!~~",
    "#>",
    "#>>",
    "&&",
    "*",
    "+",
    "-",
    "->",
    "->>",
    "/",
    "<",
    "<<=",
    "<=",
    "<>",
    "=",
    ">",
    ">=",
    "?",
    "@>",
    "||",
    "~",
    "~*",
    "~~",
)
_TYPES = (
    "anyarray",
    "anyelement",
    "char",
    "event_trigger",
    "float8",
    "inet",
    "jsonb",
    "name",
    "oid",
    "record",
    "regclass",
    "regconfig",
    "regnamespace",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
    "text",
    "timestamptz",
    "trigger",
    "tsquery",
    "tsvector",
    "uuid",
    "void",
)
_COLLATIONS: tuple[str, ...] = ()

CATALOG_NAMES: frozenset[tuple[str, str]] = frozenset(
    [("function", n) for n in _FUNCTIONS]
    + [("operator", n) for n in _OPERATORS]
    + [("type", n) for n in _TYPES]
    + [("collation", n) for n in _COLLATIONS]
)

# Of those, what only the functions watch() generates name (the unit test cannot see them).
GENERATED_ONLY: frozenset[tuple[str, str]] = frozenset()

# pgvector's types: unqualified only in the statements of sql/ that search its schema while
# they create a function taking one (and call nothing).
VECTOR_TYPES = frozenset({"vector", "halfvec", "sparsevec"})
