"""The database connection: the embedded Postgres (pgserver) or DATABASE_URL, and the project's own tables.

CocoIndex owns two tables per model (`core.model_state.model_table` and its video frames) and
`index_errors` (it creates, migrates, fills and drops them); `images` is the project's view of the
table of the model in use. The project also owns `embedding_cache` (embeddings by content hash, so
renamed or copied files skip the model), `indexer_status` (`core.indexer_status`),
`library_folders` (`core.folder_survey`) and `sightline_meta` (`core.model_state`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from core import folder_survey, indexer_status
from core.errors import Unavailable, first_line
from core.settings import Settings

IMAGES_TABLE = "images"
ERRORS_TABLE = "index_errors"

OWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding_cache (
    model text NOT NULL,
    content_hash text NOT NULL,
    embedding bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, content_hash)
);
CREATE TABLE IF NOT EXISTS sightline_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
"""


class DatabaseError(Unavailable):
    """The database cannot be used; the message says what to do."""


# pg data folder → pgserver handle. Its lifetime is the process's: the server stops when the last
# process using it exits, so a handle is never dropped before that.
_embedded: dict[str, Any] = {}
_embedded_lock = threading.Lock()


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the URL of the embedded server under DATA_DIR (started if needed, shared
    by every process that uses the same DATA_DIR, stopped when the last one exits)."""
    if settings.database_url:
        return settings.database_url
    key = str(settings.pg_data_dir)
    with _embedded_lock:
        if key not in _embedded:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # platformdirs: "XDG_RUNTIME_DIR is not set"
                    import pgserver
            except ImportError:
                raise DatabaseError(
                    "The embedded Postgres (pgserver) is not installed for this Python; it ships for "
                    "CPython 3.11 and 3.12. Use one of those, or set DATABASE_URL to a Postgres server "
                    "with pgvector."
                ) from None
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                _embedded[key] = pgserver.get_server(settings.pg_data_dir, cleanup_mode="stop")
            except Exception as exc:
                log = settings.pg_data_dir / "log"
                raise DatabaseError(
                    f"The embedded Postgres in {settings.pg_data_dir} did not start ({exc}); "
                    f"see {log}, or set DATABASE_URL to another server."
                ) from exc
        return str(_embedded[key].get_uri())


def restart_embedded(settings: Settings) -> None:
    """Start the embedded server again if it stopped (killed, or stopped by hand): it is Sightline's
    own, so nobody else will. A handle is kept for the process's lifetime, so this reuses it."""
    handle = _embedded.get(str(settings.pg_data_dir))
    if handle is None:
        return  # never started here: `database_url` starts it
    _forget_a_dead_postmaster(settings)
    quiet = logging.getLogger("pgserver")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a failed start logs the server's whole log file
    try:
        with _embedded_lock, handle._lock:  # pgserver's lock between processes (no public API)
            handle.ensure_postgres_running()
    except Exception as exc:
        raise DatabaseError(
            f"The embedded Postgres in {settings.pg_data_dir} did not start again ({first_line(exc)}); "
            f"see {settings.pg_data_dir / 'log'}."
        ) from exc
    finally:
        quiet.setLevel(level)


def _forget_a_dead_postmaster(settings: Settings) -> None:
    """A postmaster killed (kill -9) where nothing reaps it (a container whose first process is not
    an init) stays a zombie, which pgserver and Postgres both take for a running server, so neither
    would start a new one: its pid file goes."""
    import psutil

    pid_file = settings.pg_data_dir / "postmaster.pid"
    try:
        if psutil.Process(int(pid_file.read_text().split()[0])).status() == psutil.STATUS_ZOMBIE:
            pid_file.unlink()
    except (OSError, ValueError, IndexError, psutil.Error):
        pass  # no file, or no such process: nothing stale to forget (or pgserver handles it)


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


def ensure_schema(url: str) -> None:
    """Create the pgvector extension and the project's own tables, or explain why not."""
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
        conn.execute(OWN_SCHEMA)
        conn.execute(indexer_status.SCHEMA)
        conn.execute(folder_survey.SCHEMA)


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _where(url: str) -> str:
    if "host=/" in url or "@/" in url:
        return "The embedded server may have stopped; run the command again to restart it."
    return "Check that the server in DATABASE_URL is running and reachable."
