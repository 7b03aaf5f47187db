"""The hand-written SQL of the PostgreSQL adapter's hot paths.

Statements name tables without a schema: every pooled connection's ``search_path`` is
the storage's schema. asyncpg prepares each text once per connection and caches it, so
the server plans these once and then only binds values.

Global log visibility (see docs/design.md, "A gap-free global log on PostgreSQL"):
``commit_id`` is the writing transaction's 64-bit id. Every storage transaction registers
as a possible writer of this store before it can hold an id (a shared advisory lock,
:data:`REGISTER_WRITER`). A reader first reads the *horizon* (:data:`READ_HORIZON`): the
lowest id held by a registered transaction still in flight, or, when none holds one, an
id below every id still to be assigned. Then, in a statement of its own (so with a newer
snapshot), it returns only rows whose ``commit_id`` is below that horizon: no row can
appear there later, and paging by ``(commit_id, position)`` never passes an event that
commits late. Transactions that are not registered writers of this store (another
database's, an application's own, a reporting query's) never hold the horizon back.
"""

from __future__ import annotations

import functools
import zlib

# pg_current_xact_id() is xid8: the 32-bit xid extended with the wraparound epoch, so
# it grows monotonically for the cluster's life and fits a bigint; ::text::bigint is
# the documented way to turn it into a number.
CURRENT_XACT = "pg_current_xact_id()::text::bigint"

# Every storage transaction starts with this, one round trip: BEGIN, then the advisory
# lock that makes it visible in pg_locks as a possible writer of this store, before it can
# hold a transaction id, until it has ended (committed or rolled back). Shared, so writers
# never wait for each other; the first key keeps it apart from the per-stream locks below
# and from an application's own advisory locks, the second names the store (its schema).
WRITER_LOCK_KEY = 1702258031


@functools.cache
def writer_key(schema: str) -> int:
    """The second key of the writer lock of the store in ``schema``: a signed 32-bit hash.

    Computed here rather than by the server so that :func:`begin_writer` is plain text:
    two schemas that share a key only make each other's readers wait a little longer.
    """
    key = zlib.crc32(schema.encode())
    return key - (1 << 32) if key >= 1 << 31 else key


@functools.cache
def begin_writer(schema: str) -> str:
    """``BEGIN`` and the writer lock of the store in ``schema``: one simple query."""
    return f"BEGIN; SELECT pg_advisory_xact_lock_shared({WRITER_LOCK_KEY}, {writer_key(schema)})"


COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

# The registered writers of this store ($1 is its writer_key), one row per transaction, with
# the lowest 64-bit id it holds (NULL while it holds none). pg_locks is read live at each
# call and needs no privilege. A transaction holds an ExclusiveLock on its own id and on
# each of its subtransactions' ids, which are all younger than its own: the lowest is the
# top-level id, the one its rows carry. pg_locks shows 32-bit ids; an id still in flight is
# within 2^31 of `next` (wraparound protection guarantees it), which gives back its epoch.
# Grouped by virtual transaction rather than pid, so a prepared transaction counts too.
_WRITERS = f"""
SELECT min(pid) AS pid, min(
    CASE WHEN locktype = 'transactionid' THEN
        n.next + ((transactionid::text::bigint - n.next) % 4294967296 + 6442450944)
        % 4294967296 - 2147483648
    END
) AS xid
FROM pg_locks
WHERE (
    locktype = 'advisory' AND classid = {WRITER_LOCK_KEY} AND objid = $1::int4::oid
    AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
) OR (locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted)
GROUP BY virtualtransaction
HAVING bool_or(locktype = 'advisory')
"""

# `next` is this statement's snapshot's xmax: every id assigned from now on is at least
# that. It is taken when the statement starts, before pg_locks is read, so a writer that
# registers after the read gets an id no lower than it (see docs/design.md).
_NEXT = "(SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next) AS n"

READ_HORIZON = f"""
SELECT least(min(w.xid), min(n.next)) FROM {_NEXT}
LEFT JOIN LATERAL ({_WRITERS}) AS w ON true
"""
"""Every event with a ``commit_id`` below this has committed or will never be stored.

Run it as a statement of its own, before the read that uses it: the read's snapshot must
be taken after the writers were looked up.
"""

# The registered writer holding the lowest id: what holds the horizon back, when some
# committed events are not readable yet. Only for reporting lag: pg_stat_activity shows
# an unprivileged role the pid, database and application of every session, but when its
# transaction started only for sessions of its own role (or with pg_read_all_stats).
HORIZON_BLOCKER = f"""
SELECT w.pid, a.datname, a.application_name,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8
FROM {_NEXT}
CROSS JOIN LATERAL ({_WRITERS}) AS w
LEFT JOIN pg_stat_activity AS a ON a.pid = w.pid
WHERE w.xid IS NOT NULL
ORDER BY w.xid
LIMIT 1
"""

NOTIFY_CHANNEL = "eventfold_events"

EVENT_COLUMNS = (
    "stream_id, version, position, commit_id, event_id, type_name, schema_version, "
    "data::text, occurred_at, correlation_id, causation_id, actor"
)
"""In :class:`~eventfold.ports.records.StoredEvent` field order, so a row unpacks into it."""

# Appends are one statement each, one round trip: check the expected version, insert,
# report the positions inserted. A plain INSERT ... SELECT with an EXISTS, without the
# CTE, LATERAL join and aggregate that reading the head first needs: about a third
# less server time per append, and the generic plan fits every call.
# - Versions of a stream have no gaps, so "the stream is at version $2" is "version $2
#   exists (or $2 is 0) and version $2 + 1 does not". The WHERE checks the first in this
#   statement's snapshot; the unique (stream_id, version) constraint checks the second
#   against every transaction, committed or in flight.
# - Two writers that expect the same version race on that constraint: ON CONFLICT DO
#   NOTHING makes the loser wait for the winner's commit and then skip its rows instead
#   of aborting the caller's transaction; the caller sees fewer positions than events
#   and undoes the rest (see PostgresSession.append).
# - `commit_id <= own id` on the stream's head keeps each stream's events in version
#   order in the log: a transaction that took its id before another one appended to this
#   stream and committed would otherwise place its later version before that earlier one.
# - No NOTIFY here: notifying takes a cluster-wide lock from commit until the end of the
#   commit's WAL flush, so concurrent appenders would commit one at a time. The storage
#   notifies after the commit instead (see listener.py).
_INSERT_EVENT = """
INSERT INTO eventfold_events (
    commit_id, stream_id, version, event_id, type_name, schema_version, data,
    occurred_at, correlation_id, causation_id, actor
)"""

_AT_EXPECTED_HEAD = f"""
WHERE $2 = 0 OR EXISTS (
    SELECT FROM eventfold_events
    WHERE stream_id = $1 AND version = $2 AND commit_id <= {CURRENT_XACT}
)"""

APPEND_ONE = f"""{_INSERT_EVENT}
SELECT {CURRENT_XACT}, $1, $2 + 1, $3, $4, $5, $6::jsonb, $7, $8, $9, $10
{_AT_EXPECTED_HEAD}
ON CONFLICT (stream_id, version) DO NOTHING
RETURNING commit_id, position
"""
"""One event at exact version $2 + 1: its log position, or no row on a conflict."""

APPEND_MANY = f"""{_INSERT_EVENT}
SELECT {CURRENT_XACT}, $1, $2 + e.n, e.event_id, e.type_name, e.schema_version,
       e.data::jsonb, e.occurred_at, e.correlation_id, e.causation_id, e.actor
FROM unnest(
    $3::uuid[], $4::text[], $5::int[], $6::text[], $7::timestamptz[],
    $8::text[], $9::text[], $10::text[]
) WITH ORDINALITY AS e(
    event_id, type_name, schema_version, data, occurred_at,
    correlation_id, causation_id, actor, n
)
{_AT_EXPECTED_HEAD}
ORDER BY e.n
ON CONFLICT (stream_id, version) DO NOTHING
RETURNING commit_id, position
"""
"""A batch (one array per column) from exact version $2 + 1: the log positions inserted."""

# "Any version" reads the head and inserts on top of it in one statement, under the
# stream's advisory lock (see PostgresSession.append).
APPEND_ANY = f"""
WITH last AS (
    SELECT coalesce(l.version, 0) AS version, coalesce(l.commit_id, 0) AS commit_id
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT version, commit_id FROM eventfold_events
        WHERE stream_id = $1 ORDER BY version DESC LIMIT 1
    ) AS l ON true
), appended AS ({_INSERT_EVENT}
    SELECT {CURRENT_XACT}, $1, last.version + e.n, e.event_id, e.type_name,
           e.schema_version, e.data::jsonb, e.occurred_at, e.correlation_id,
           e.causation_id, e.actor
    FROM last, unnest(
        $2::uuid[], $3::text[], $4::int[], $5::text[], $6::timestamptz[],
        $7::text[], $8::text[], $9::text[]
    ) WITH ORDINALITY AS e(
        event_id, type_name, schema_version, data, occurred_at,
        correlation_id, causation_id, actor, n
    )
    WHERE last.commit_id <= {CURRENT_XACT}
    ORDER BY e.n
    ON CONFLICT (stream_id, version) DO NOTHING
    RETURNING position
)
SELECT last.version AS head, (SELECT array_agg(position) FROM appended) AS positions,
       {CURRENT_XACT} AS commit_id
FROM last
"""

NOTIFY = "SELECT pg_notify($1, $2)"

# Transaction-scoped, so released at commit or rollback; the first key keeps eventfold's
# locks apart from an application's own advisory locks.
LOCK_STREAM = "SELECT pg_advisory_xact_lock(1702258030, hashtext($1))"

UNDO_APPEND = "DELETE FROM eventfold_events WHERE position = ANY($1::bigint[])"

STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM eventfold_events WHERE stream_id = $1"

READ_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM eventfold_events
WHERE stream_id = $1 AND version >= $2 AND version <= coalesce($3::int, 2147483647)
  AND ($4::timestamptz IS NULL OR occurred_at <= $4)
ORDER BY version
"""


# A page of the log below the horizon: the greater of $4, a horizon this store's readers
# computed before (see READ_HORIZON; a horizon stays valid for good), and the xmin of this
# statement's own snapshot (every transaction below it has ended, registered or not). So
# a reader pays for READ_HORIZON only when neither lets it read what has committed: the
# first column says whether committed rows lie at or above the horizon used. The page
# is cut in an inner query that walks the (commit_id, position) index from `after` and
# stops after $3 rows; visibility is applied outside it. Both conditions in one WHERE
# made the planner misjudge them together and fetch and sort every remaining row for a
# custom plan. The result is the same: rows are ordered by commit_id, so the rows below
# the horizon are a prefix of the inner page, and that prefix is exactly the first rows
# of the readable log after `after`. With an empty page, one row of NULL event columns.
def _read_log(types: str) -> str:
    return f"""
SELECT more.held, page.* FROM (
    SELECT greatest($4::bigint, pg_snapshot_xmin(pg_current_snapshot())::text::bigint) AS below
) AS horizon
CROSS JOIN LATERAL (
    SELECT EXISTS (
        SELECT FROM eventfold_events
        WHERE commit_id >= horizon.below AND (commit_id, position) > ($1, $2)
    ) AS held
) AS more
LEFT JOIN LATERAL (
    SELECT * FROM (
        SELECT {EVENT_COLUMNS} FROM eventfold_events
        WHERE (commit_id, position) > ($1, $2){types}
        ORDER BY commit_id, position
        LIMIT $3
    ) AS inner_page
    WHERE commit_id < horizon.below
) AS page ON true
ORDER BY page.commit_id, page.position
"""


READ_LOG = _read_log("")
READ_LOG_OF_TYPES = _read_log(" AND type_name = ANY($5::text[])")

LOG_HEAD = """
SELECT commit_id, position FROM eventfold_events
WHERE commit_id < $1
ORDER BY commit_id DESC, position DESC
LIMIT 1
"""

COUNT_AFTER = """
SELECT count(*) FROM eventfold_events
WHERE (commit_id, position) > ($1, $2) AND commit_id < $3
"""

COMMITTED_HEAD = """
SELECT commit_id, position FROM eventfold_events
ORDER BY commit_id DESC, position DESC
LIMIT 1
"""

COUNT_UNREADABLE = "SELECT count(*) FROM eventfold_events WHERE commit_id >= $1"

LOAD_SNAPSHOT = """
SELECT stream_id, version, state_type, schema_version, data::text, taken_at
FROM eventfold_snapshots WHERE stream_id = $1
"""

SAVE_SNAPSHOT = """
INSERT INTO eventfold_snapshots (stream_id, version, state_type, schema_version, data, taken_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (stream_id) DO UPDATE SET
    version = excluded.version, state_type = excluded.state_type,
    schema_version = excluded.schema_version, data = excluded.data,
    taken_at = excluded.taken_at
"""

DOCUMENT_COLUMNS = "collection, key, version, data::text, updated_at"

LOAD_DOCUMENT = f"""
SELECT {DOCUMENT_COLUMNS} FROM eventfold_documents WHERE collection = $1 AND key = $2
"""

LOAD_DOCUMENTS = f"""
SELECT {DOCUMENT_COLUMNS} FROM eventfold_documents
WHERE collection = $1 AND key = ANY($2::text[])
"""

INSERT_DOCUMENT = """
INSERT INTO eventfold_documents (collection, key, version, data, updated_at)
VALUES ($1, $2, 1, $3::jsonb, now())
ON CONFLICT (collection, key) DO NOTHING
RETURNING version
"""

UPDATE_DOCUMENT = """
UPDATE eventfold_documents SET version = version + 1, data = $3::jsonb, updated_at = now()
WHERE collection = $1 AND key = $2 AND version = $4
RETURNING version
"""

DELETE_DOCUMENT = """
DELETE FROM eventfold_documents WHERE collection = $1 AND key = $2 AND version = $3
RETURNING version
"""

DOCUMENT_VERSION = """
SELECT coalesce(max(version), 0) FROM eventfold_documents WHERE collection = $1 AND key = $2
"""

ADD_TO_OUTBOX = """
INSERT INTO eventfold_outbox (
    event_id, type_name, schema_version, aggregate_type, aggregate_id, data,
    occurred_at, correlation_id, causation_id, actor, created_at, traceparent
)
SELECT e.event_id, e.type_name, e.schema_version, e.aggregate_type, e.aggregate_id,
       e.data::jsonb, e.occurred_at, e.correlation_id, e.causation_id, e.actor, now(),
       e.traceparent
FROM unnest(
    $1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[]
) WITH ORDINALITY AS e(
    event_id, type_name, schema_version, aggregate_type, aggregate_id, data,
    occurred_at, correlation_id, causation_id, actor, traceparent, n
)
ORDER BY e.n
"""

# The common case, one message per command, without the arrays: cheaper to bind and plan.
ADD_ONE_TO_OUTBOX = """
INSERT INTO eventfold_outbox (
    event_id, type_name, schema_version, aggregate_type, aggregate_id, data,
    occurred_at, correlation_id, causation_id, actor, created_at, traceparent
)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, now(), $11)
"""

READ_OUTBOX = """
SELECT id, event_id, type_name, schema_version, aggregate_type, aggregate_id, data::text,
       occurred_at, correlation_id, causation_id, actor, created_at, attempts,
       next_attempt_at, published_at, last_error, dead, refusals, traceparent
FROM eventfold_outbox
WHERE published_at IS NULL AND NOT dead
ORDER BY id
LIMIT $1
"""

LOAD_CHECKPOINT = "SELECT commit_id, position FROM eventfold_checkpoints WHERE name = $1"

SAVE_CHECKPOINT = """
INSERT INTO eventfold_checkpoints (name, commit_id, position, updated_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO UPDATE SET
    commit_id = excluded.commit_id, position = excluded.position,
    updated_at = excluded.updated_at
"""

INSERT_CHECKPOINT = """
INSERT INTO eventfold_checkpoints (name, commit_id, position, updated_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (name) DO NOTHING
"""

UPDATE_CHECKPOINT = """
UPDATE eventfold_checkpoints SET commit_id = $4, position = $5, updated_at = now()
WHERE name = $1 AND commit_id = $2 AND position = $3
"""

MARK_PROCESSED = """
INSERT INTO eventfold_inbox (event_id, handler_name, processed_at)
VALUES ($1, $2, now())
ON CONFLICT (event_id, handler_name) DO NOTHING
RETURNING true
"""

PURGE_PROCESSED = "DELETE FROM eventfold_inbox WHERE processed_at < $1"
