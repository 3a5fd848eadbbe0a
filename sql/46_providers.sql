-- Remote models: an OpenAI-compatible /embeddings endpoint or the Hugging Face Inference API's
-- feature extraction, registered as rows of embeddings.models like the local ones (their
-- columns: sql/state/10_schema.sql) and selected by watch(..., model => ...) like any other.
--
-- What a row holds is configuration anyone reading the registry may see: the endpoint, the
-- provider's model, request limits, a price, and the *name* of the API key (`credential`). The
-- key itself is the worker's (its environment or a mounted file: docs/providers.md), never the
-- database's: register_model() refuses an endpoint that carries one.

-- The revision the worker records in embeddings.provenance for vectors of remote model m: the
-- provider's model id and the dimensions asked for (`text-embedding-3-small@1536`). Two
-- endpoints serving the same model (OpenAI and Azure, two text-embeddings-inference replicas)
-- produce the same vectors, so the endpoint is not part of it. Spaces (none in real ids) become
-- underscores: a producer is 'model revision variant', split at spaces.
-- (worker/models/remote/spec.py: RemoteSpec.revision computes the same.)
CREATE FUNCTION embeddings_internal.remote_revision(m embeddings.models) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT regexp_replace(m.remote_model, E'\\s', '_', 'g') || '@' || m.dimensions
$$;

-- The remote provider kinds and their defaults: the one place in SQL that knows them (the
-- worker's side is a class per kind, worker/models/remote/providers.py, whose defaults these
-- are: tests/unit/test_provider_kinds.py compares them). A new kind is a row here and a class
-- there; embeddings.models takes any kind's name, no table changes. `endpoint`: the default
-- endpoint, `{model}` standing for the remote model id.
CREATE FUNCTION embeddings.provider_defaults()
RETURNS TABLE (provider text, endpoint text, max_tokens integer, max_inputs integer,
               max_request_tokens integer, description text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('openai', 'https://api.openai.com/v1', 8191, 2048, 300000,
            'any OpenAI-compatible /embeddings endpoint'),
           ('huggingface', 'https://router.huggingface.co/hf-inference/models/{model}/pipeline/feature-extraction',
            512, 32, NULL::integer, 'the Inference API''s feature extraction')
$$;
COMMENT ON FUNCTION embeddings.provider_defaults IS
    'The remote embedding provider kinds register_model() takes, and their default endpoint and limits.';

-- Refuses an endpoint the registry may not keep for `owner` (a model's or a reranker's name):
-- one that is not an http(s) URL; one that carries a credential (the registry holds no secret:
-- a key in the URL would be readable by every worker role, in every dump and in status); and,
-- for a registration that sends a key (`credential` not NULL), plain http to anything but a
-- loopback address written as an IP literal (127.0.0.0/8, ::1) or localhost: a *name* such as
-- 127.0.0.1.nip.io resolves wherever its owner says. The worker refuses the same when it
-- builds the model or the reranker (worker/models/remote/spec.py: plain_http_problem).
-- register_model() and register_reranker() (sql/57_rerank.sql) call it.
CREATE FUNCTION embeddings_internal.check_endpoint(owner text, endpoint text, credential text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    endpoint_host text;
    address inet;
    loopback boolean;
BEGIN
    IF endpoint IS NULL OR endpoint !~ '^https?://[^/?#]+' THEN
        RAISE EXCEPTION 'endpoint "%" is not an http(s) URL', endpoint USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF endpoint ~ '^https?://[^/?#]*@' OR endpoint ~* '[?&](api[-_]?key|key|token|access_token|sig|signature)=' THEN
        RAISE EXCEPTION 'the endpoint of % carries a credential', owner
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keys stay out of the database: give the key''s name as credential => ''...'' and the key to the worker (docs/providers.md).';
    END IF;
    IF credential IS NOT NULL AND endpoint ~* '^http://' THEN
        endpoint_host := lower(substring(endpoint from E'^[^:]+://(\\[[^]/]*\\]|[^/?#:]*)'));
        loopback := endpoint_host = 'localhost';
        IF NOT loopback THEN
            BEGIN
                address := btrim(endpoint_host, '[]')::inet;
                loopback := CASE family(address)
                    WHEN 4 THEN address <<= inet '127.0.0.0/8' AND pg_catalog.host(address) = endpoint_host
                    ELSE address = inet '::1' END;
            EXCEPTION WHEN invalid_text_representation THEN
                loopback := false;  -- a name, not an address
            END;
        END IF;
        IF NOT loopback THEN
            RAISE EXCEPTION 'refusing to send the API key of credential % over plain http to %', quote_literal(credential), endpoint
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Plain http only to a loopback address (127.0.0.0/8 or ::1 as an IP literal, or localhost): use https, or credential => '''' for an endpoint without authentication.';
        END IF;
    END IF;
END
$$;

-- Refuses `given`, argument `argument` of function `fn`, outside its range: from `low` to
-- `high` (NULL: no upper bound; `low_excluded`: more than `low`), naming the argument, its
-- value and the range. The tables' checks would name only a constraint, after the function
-- had filled in the rest. NaN and infinity are in no range (NaN sorts above every number):
-- a timeout of 'Infinity' passed a check of > 0, and the worker would wait for ever.
-- register_model() (through check_model_arguments()) and register_reranker() call it.
CREATE FUNCTION embeddings_internal.check_range(fn text, argument text, given numeric, low numeric,
                                               high numeric, low_excluded boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF given IS NOT NULL AND (given < low OR (low_excluded AND given = low) OR given > high
                              OR given >= 'Infinity'::numeric) THEN
        RAISE EXCEPTION '%: % is %, not %', fn, argument,
                CASE WHEN high IS NULL THEN format('%s or more', low)
                     WHEN low_excluded THEN format('more than %s and at most %s', low, high)
                     ELSE format('from %s to %s', low, high) END,
                given
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- register_model()'s refusals of its arguments, each naming the argument, before anything is
-- written: a NULL or blank name, NULL dimensions, an unknown provider, a value out of its
-- range (the table's checks, and the bounds rerankers have: at most 64 requests in flight
-- and 600 s a request), a credential that is no key's name, a pooling the worker does not do,
-- and for a local model an argument only a remote one takes (it was dropped without a word).
CREATE FUNCTION embeddings_internal.check_model_arguments(
    name text, dimensions integer, provider text, endpoint text, remote_model text, max_tokens integer,
    send_dimensions boolean, max_inputs integer, max_request_tokens integer, max_in_flight integer,
    timeout_seconds double precision, price_per_million_tokens numeric, credential text, pooling text
) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn CONSTANT text := 'embeddings.register_model()';
    remote_only text;
BEGIN
    -- (a NULL name would be blamed on the endpoint made of it; an empty one is no name to pass)
    IF name IS NULL OR btrim(name) = '' OR dimensions IS NULL THEN
        RAISE EXCEPTION '%: %', fn,
                CASE WHEN name IS NULL THEN 'name must not be NULL' WHEN dimensions IS NULL THEN 'dimensions must not be NULL'
                     ELSE 'name must not be empty' END
            USING ERRCODE = CASE WHEN name IS NULL OR dimensions IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END;
    END IF;
    IF provider IS DISTINCT FROM 'local' AND NOT EXISTS (SELECT FROM embeddings.provider_defaults() d WHERE d.provider = check_model_arguments.provider) THEN
        RAISE EXCEPTION 'unknown provider "%"', provider
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = (SELECT string_agg(format('%s (%s)', d.provider, d.description), ', ' ORDER BY d.provider)
                          FROM embeddings.provider_defaults() d) || ', or local.';
    END IF;
    IF provider = 'local' THEN
        SELECT a.argument INTO remote_only
        FROM (VALUES (1, 'endpoint', endpoint IS NOT NULL), (2, 'remote_model', remote_model IS NOT NULL),
                     (3, 'send_dimensions', coalesce(send_dimensions, false)), (4, 'max_inputs', max_inputs IS NOT NULL),
                     (5, 'max_request_tokens', max_request_tokens IS NOT NULL), (6, 'max_in_flight', max_in_flight IS NOT NULL),
                     (7, 'timeout_seconds', timeout_seconds IS NOT NULL),
                     (8, 'price_per_million_tokens', price_per_million_tokens IS NOT NULL),
                     (9, 'credential', credential IS NOT NULL)) a(n, argument, given)
        WHERE a.given ORDER BY a.n LIMIT 1;
        IF remote_only IS NOT NULL THEN
            RAISE EXCEPTION '%: a local model takes no %: it is an ONNX directory the worker finds by its name', fn, remote_only
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Leave %s out, or register a remote provider''s model: provider => %s.', remote_only,
                                    (SELECT string_agg(quote_literal(d.provider), ' or ' ORDER BY d.provider) FROM embeddings.provider_defaults() d));
        END IF;
    END IF;
    PERFORM embeddings_internal.check_range(fn, 'dimensions', dimensions, 1, 4000);  -- (HNSW's bound on halfvec)
    PERFORM embeddings_internal.check_range(fn, 'max_tokens', max_tokens, 1, NULL);
    PERFORM embeddings_internal.check_range(fn, 'max_inputs', max_inputs, 1, NULL);
    PERFORM embeddings_internal.check_range(fn, 'max_request_tokens', max_request_tokens, 1, NULL);
    PERFORM embeddings_internal.check_range(fn, 'max_in_flight', max_in_flight, 1, 64);
    PERFORM embeddings_internal.check_range(fn, 'timeout_seconds', timeout_seconds::numeric, 0, 600, true);
    PERFORM embeddings_internal.check_range(fn, 'price_per_million_tokens', price_per_million_tokens, 0, NULL);
    IF credential <> '' AND credential !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION '%: credential % is not a key''s name', fn, quote_literal(credential)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The name of the API key the worker sends (letters, digits, ".", "_", "-"; docs/providers.md), never the key itself.';
    END IF;
    IF pooling IS NULL OR pooling NOT IN ('mean', 'cls') THEN
        RAISE EXCEPTION '%: pooling is ''mean'' or ''cls'', not %', fn, coalesce(quote_literal(pooling), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The models the worker ships by name (worker/models/catalog.py: REGISTRY, whose entries these
-- are: tests/integration/test_model_registry.py compares them). A built-in name is that model
-- everywhere, the worker's files and the registry's row alike: the worker runs it from its own
-- directory (downloaded at a pinned revision), whatever a row of embeddings.models says, so
-- register_model() refuses to make one a remote model or to give it other dimensions, and
-- unregister_model() keeps its row. The install's rows of these models: sql/state/10_schema.sql.
CREATE FUNCTION embeddings_internal.built_in_models()
RETURNS TABLE (name text, dimensions integer, max_tokens integer, pooling text, source text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('gte-small', 384, 512, 'mean', 'Supabase/gte-small'),
           ('all-MiniLM-L6-v2', 384, 256, 'mean', 'sentence-transformers/all-MiniLM-L6-v2'),
           ('bge-small-en-v1.5', 384, 512, 'cls', 'BAAI/bge-small-en-v1.5')
$$;

-- Why a model of built-in name `name` (built_in_models()) cannot be `provider`'s with
-- `dimensions` and `pooling` (NULL: not checked); NULL when it can, or when `name` is no
-- built-in model's. register_model() refuses such a registration; watch() refuses a row left so
-- by an earlier release (one registered the built-in name as a remote model: the worker serves
-- the built-in model under that name, not the remote one).
CREATE FUNCTION embeddings_internal.built_in_mismatch(name text, provider text, dimensions integer, pooling text)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN built_in_mismatch.provider IS DISTINCT FROM 'local'
                THEN format('%s is a built-in model, which the worker runs from its own files: it cannot be %s''s remote model',
                            b.name, built_in_mismatch.provider)
                WHEN built_in_mismatch.dimensions IS DISTINCT FROM b.dimensions
                THEN format('%s is a built-in model of %s dimensions, not %s', b.name, b.dimensions, built_in_mismatch.dimensions)
                WHEN built_in_mismatch.pooling <> b.pooling
                THEN format('%s is a built-in model with %s pooling, not %s', b.name, b.pooling, built_in_mismatch.pooling) END
    FROM embeddings_internal.built_in_models() b WHERE b.name = built_in_mismatch.name
$$;

-- The HINT of a refused registration under a built-in name: the built-in model's own row, and
-- a name of its own for anything else.
CREATE FUNCTION embeddings_internal.built_in_hint(name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('Register another model under a name of its own (SELECT embeddings.register_model(''my-%s'', ...)); '
                  'SELECT embeddings.register_model(%L, %s, provider => ''local''); is the built-in model''s own row. '
                  'Built-in models: %s.',
                  b.name, b.name, b.dimensions,
                  (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM embeddings_internal.built_in_models() a))
    FROM embeddings_internal.built_in_models() b WHERE b.name = built_in_hint.name
$$;

-- The targets that use model `name`, and those changing to it, by name (NULL: none): what
-- register_model() may not change the vectors of, and unregister_model() may not remove.
CREATE FUNCTION embeddings_internal.model_users(name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT string_agg(u, ', ' ORDER BY u) FROM (
        SELECT embeddings_internal.target_name(t) AS u FROM embeddings.targets t WHERE t.model = model_users.name
        UNION ALL
        SELECT embeddings_internal.target_name(t) || ' (changing to it)' FROM embeddings.model_changes c
        JOIN embeddings.targets t ON t.id = c.target_id WHERE c.model = model_users.name) x);
END
$$;

-- Adds or updates model `name`. `provider` 'openai' (any OpenAI-compatible /embeddings
-- endpoint: `endpoint` is its base URL, the one ending in /v1), 'huggingface' (the Inference
-- API's feature extraction: `endpoint` is the full URL, by default the serverless one of
-- `remote_model`) or 'local' (an ONNX model directory the worker finds by `name`). Left NULL,
-- `provider` is the model's own when it is registered already, and so are its `endpoint`,
-- `remote_model` and `credential` left NULL (registering a model again to change a limit never
-- sends its texts, or a key, elsewhere: naming a provider does), 'local' for a built-in model,
-- else 'openai'. A built-in model's name (built_in_models()) stays that model: local, of its
-- dimensions and pooling (its limits, source and pooling filled in from it). Limits left
-- NULL get the provider's defaults below, written into the row so that `model list` shows what
-- the worker uses. `credential` names the API key the worker sends (default: the provider's
-- name; NULL for an endpoint without authentication: pass ''). `tokenizer` names a local
-- model directory or tokenizer.json whose tokenizer counts tokens exactly; without one they are
-- estimated (docs/providers.md). A model some target uses (or is being changed to) keeps what
-- decides its vectors: provider, remote model, dimensions, whether they are sent; register a
-- new name and change to it (blue/green) instead. Returns the name. Workers see the change at
-- their next read of the registry (with the targets'); no NOTIFY, which would make a prepared
-- transaction that registers a model fail at PREPARE TRANSACTION.
CREATE FUNCTION embeddings.register_model(
    name text,
    dimensions integer,
    provider text DEFAULT NULL,
    endpoint text DEFAULT NULL,
    remote_model text DEFAULT NULL,
    max_tokens integer DEFAULT NULL,
    send_dimensions boolean DEFAULT false,
    max_inputs integer DEFAULT NULL,
    max_request_tokens integer DEFAULT NULL,
    max_in_flight integer DEFAULT NULL,
    timeout_seconds double precision DEFAULT NULL,
    price_per_million_tokens numeric DEFAULT NULL,
    credential text DEFAULT NULL,
    tokenizer text DEFAULT NULL,
    pooling text DEFAULT NULL,
    description text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old embeddings.models;
    m embeddings.models;
    built_in record;
    kind record;
    kept boolean;
    problem text;
    users text;
BEGIN
    SELECT * INTO old FROM embeddings.models mo WHERE mo.name = register_model.name FOR UPDATE;
    SELECT * INTO built_in FROM embeddings_internal.built_in_models() b WHERE b.name = register_model.name;
    m.provider := coalesce(provider, CASE WHEN built_in.name IS NOT NULL THEN 'local' END, old.provider, 'openai');
    kept := provider IS NULL AND old.provider = m.provider;  -- (where its requests go, then, too)
    m.pooling := coalesce(pooling, built_in.pooling, 'mean');
    PERFORM embeddings_internal.check_model_arguments(
        name, dimensions, m.provider, endpoint, remote_model, max_tokens, send_dimensions, max_inputs,
        max_request_tokens, max_in_flight, register_model.timeout_seconds, price_per_million_tokens, credential, m.pooling);
    problem := embeddings_internal.built_in_mismatch(name, m.provider, dimensions, m.pooling);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'embeddings.register_model(): %', problem
            USING ERRCODE = 'invalid_parameter_value', HINT = embeddings_internal.built_in_hint(name);
    END IF;
    SELECT * INTO kind FROM embeddings.provider_defaults() d WHERE d.provider = m.provider;
    m.name := name;
    m.dimensions := dimensions;
    m.description := description;
    m.is_default := false;
    m.send_dimensions := coalesce(send_dimensions, false);
    m.tokenizer := nullif(tokenizer, '');
    IF m.provider = 'local' THEN
        m.max_tokens := coalesce(max_tokens, built_in.max_tokens, 512);
        m.source := built_in.source;  -- (NULL: a directory of yours, nothing to download)
    ELSE
        m.remote_model := coalesce(remote_model, CASE WHEN kept THEN old.remote_model END, name);
        m.endpoint := rtrim(coalesce(endpoint, CASE WHEN kept THEN old.endpoint END,
                                     replace(kind.endpoint, '{model}', m.remote_model)), '/');
        m.credential := CASE WHEN credential IS NOT NULL THEN nullif(credential, '')
                             WHEN kept THEN old.credential ELSE m.provider END;
        PERFORM embeddings_internal.check_endpoint(name, m.endpoint, m.credential);
        m.source := m.endpoint;
        -- The provider's documented limits (docs/providers.md cites them); a self-hosted server's
        -- are yours to set.
        m.max_tokens := coalesce(max_tokens, kind.max_tokens);
        m.max_inputs := coalesce(max_inputs, kind.max_inputs);
        m.max_request_tokens := coalesce(max_request_tokens, kind.max_request_tokens);
        m.max_in_flight := coalesce(max_in_flight, 4);
        m.timeout_seconds := coalesce(register_model.timeout_seconds, 60);
        m.price_per_million_tokens := price_per_million_tokens;
    END IF;
    IF old.name IS NOT NULL AND (old.provider, old.remote_model, old.dimensions, old.send_dimensions)
                 IS DISTINCT FROM (m.provider, m.remote_model, m.dimensions, m.send_dimensions) THEN
        users := embeddings_internal.model_users(name);
        IF users IS NOT NULL THEN
            RAISE EXCEPTION 'model % is in use (%): its provider, remote model, dimensions and send_dimensions decide its vectors', name, users
                USING ERRCODE = 'object_in_use',
                      HINT = 'Register the new settings under another name and change to it: SELECT embeddings.watch(<table>, <content>, model => <new name>).';
        END IF;
    END IF;
    INSERT INTO embeddings.models AS mo (name, dimensions, max_tokens, pooling, is_default, source, description,
                                         provider, endpoint, remote_model, send_dimensions, max_inputs,
                                         max_request_tokens, max_in_flight, timeout_seconds,
                                         price_per_million_tokens, credential, tokenizer)
    VALUES (m.name, m.dimensions, m.max_tokens, m.pooling, false, m.source, m.description,
            m.provider, m.endpoint, m.remote_model, m.send_dimensions, m.max_inputs,
            m.max_request_tokens, m.max_in_flight, m.timeout_seconds,
            m.price_per_million_tokens, m.credential, m.tokenizer)
    ON CONFLICT ON CONSTRAINT models_pkey DO UPDATE
    SET dimensions = excluded.dimensions, max_tokens = excluded.max_tokens, pooling = excluded.pooling,
        source = excluded.source, description = coalesce(excluded.description, mo.description),
        provider = excluded.provider, endpoint = excluded.endpoint, remote_model = excluded.remote_model,
        send_dimensions = excluded.send_dimensions, max_inputs = excluded.max_inputs,
        max_request_tokens = excluded.max_request_tokens, max_in_flight = excluded.max_in_flight,
        timeout_seconds = excluded.timeout_seconds, price_per_million_tokens = excluded.price_per_million_tokens,
        credential = excluded.credential, tokenizer = excluded.tokenizer;
    RETURN name;
END
$$;
COMMENT ON FUNCTION embeddings.register_model IS
    'Adds or updates a model by name: a local ONNX directory or a remote provider''s model. Schema owner only.';

-- Removes model `name` from the registry; false when there was none. Refused for a built-in
-- model (its row stays: watch() and the worker know it by name; register_model(name,
-- dimensions, provider => 'local') undoes a registration under its name), while a target uses
-- it or is changing to it (the target's vectors are its; move the table to another model, or
-- cancel the change, first), and while it is the database's default (watch() without a model
-- would name it: set_default_model() another first). Workers forget it at their next read of
-- the registry; a search or `embed` naming it fails from then on, saying it is unknown. Schema
-- owner only, like register_model().
CREATE FUNCTION embeddings.unregister_model(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m embeddings.models;
    users text;
BEGIN
    -- (the row locked first: a watch() naming the model waits for this, then finds it gone)
    SELECT * INTO m FROM embeddings.models mo WHERE mo.name = unregister_model.name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM embeddings_internal.built_in_models() b WHERE b.name = m.name) THEN
        RAISE EXCEPTION 'model % is built in: the worker ships it, and its row stays', name
            USING ERRCODE = 'invalid_parameter_value', HINT = embeddings_internal.built_in_hint(name);
    END IF;
    users := embeddings_internal.model_users(name);
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'model % is in use (%)', name, users
            USING ERRCODE = 'object_in_use',
                  HINT = 'Move each table to another model first (SELECT embeddings.watch(<table>, <content>, model => <other>)), '
                         'or cancel its change (SELECT embeddings.cancel_change(<table>)).';
    END IF;
    IF m.is_default THEN
        RAISE EXCEPTION 'model % is the database''s default model, which watch() uses when none is named', name
            USING ERRCODE = 'object_in_use',
                  HINT = 'Make another model the default first: SELECT embeddings.set_default_model(<name>);';
    END IF;
    DELETE FROM embeddings.models mo WHERE mo.name = unregister_model.name;
    RETURN true;
END
$$;
COMMENT ON FUNCTION embeddings.unregister_model IS
    'Removes a model no target uses and that is not the default; built-in models stay. Schema owner only.';

-- Records who produced the vectors a watched column already holds (vectors brought from
-- elsewhere: docs/model-changes.md, "Bringing your own vectors"), so that the worker writes
-- there only if it produces the same: `model` (default: the target's), and for a remote model
-- its revision by default (remote_revision()), variant 'remote'. A local model's revision is
-- the digest of an ONNX file (`sha256:` and 16 hex digits, as status' vectors_from shows it):
-- name it. Refuses when another producer is recorded. Returns the producer recorded.
CREATE FUNCTION embeddings.adopt_vectors(
    source regclass,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,
    revision text DEFAULT NULL,
    variant text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    m embeddings.models;
    recorded text;
    ours text;
    rev text;
    var text;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = adopt_vectors.source AND tg.embedding_column = adopt_vectors.embedding_column FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%.% is not watched', source, embedding_column
            USING ERRCODE = 'undefined_object',
                  HINT = embeddings_internal.watched_columns_hint(source,
                             'Watch it first, without queuing its rows: embeddings.watch(..., backfill => false).');
    END IF;
    SELECT * INTO m FROM embeddings.models mo WHERE mo.name = coalesce(adopt_vectors.model, t.model);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model "%"', coalesce(adopt_vectors.model, t.model)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = embeddings_internal.unknown_model_hint(coalesce(adopt_vectors.model, t.model));
    END IF;
    IF m.name <> t.model THEN
        RAISE EXCEPTION '%.% is watched with model %, not %', source, embedding_column, t.model, m.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Vectors are adopted for the target''s own model: watch() it with that model first.';
    END IF;
    IF m.provider = 'local' AND revision IS NULL THEN
        RAISE EXCEPTION 'name the revision of local model % (sha256: and the first 16 hex digits of its ONNX file)', m.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Or adopt nothing: the worker''s first write records its own revision.';
    END IF;
    rev := regexp_replace(coalesce(revision, embeddings_internal.remote_revision(m)), E'\\s', '_', 'g');
    var := regexp_replace(coalesce(variant, CASE WHEN m.provider = 'local' THEN 'fp32' ELSE 'remote' END), E'\\s', '_', 'g');
    ours := concat_ws(' ', m.name, rev, var);
    recorded := embeddings_internal.claim_provenance(t.id, false, m.name, rev, var);
    IF recorded <> ours THEN
        RAISE EXCEPTION 'the vectors of %.% are recorded as produced by %, not %', source, embedding_column, recorded, ours
            USING ERRCODE = 'object_in_use',
                  HINT = 'DELETE FROM embeddings.provenance WHERE target_id = ' || t.id || ' AND NOT shadow; if that record is wrong.';
    END IF;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION embeddings.adopt_vectors IS
    'Records which model produced the vectors a watched column already holds, so the worker keeps them. Schema owner only.';
