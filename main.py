"""Sightline: search a folder of images by describing them.

    python main.py                  # serve: live indexer + web server (the default)
    python main.py index            # one incremental update, then exit
    python main.py watch            # keep the table in sync with the folder, no server
    python main.py search "a dog"   # search from the terminal
    python main.py status           # what the index holds, what failed
    python main.py places           # where the pictures were taken, with counts
    python main.py duplicates       # groups of exact and near-duplicate images (nothing is deleted)
    python main.py model [NAME]     # the model in use; NAME builds another beside it

`app` at the end is the CocoIndex app, so `cocoindex update main.py` works too.
"""

from __future__ import annotations

from core.privacy import reports_off

# before anything imports cocoindex: no usage reports. `cocoindex update main.py` imports cocoindex
# before this file; there the project's venv has switched them off already (no-usage-reports.pth).
reports_off()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from core.errors import BadRequest, Unavailable, UserError  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402

if TYPE_CHECKING:
    from types import TracebackType

    import uvicorn

KNOWN_ERRORS = (UserError, FileNotFoundError, NotADirectoryError)


def user_error(exc: BaseException) -> BaseException | None:
    """The first error in the chain that a user can act on, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KNOWN_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def cmd_index(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from flows.engine import index_once

    show_bar = sys.stderr.isatty() and not args.json
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not show_bar,
    ) as bar:
        task = bar.add_task("indexing", total=None)
        text_task: list[Any] = []

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def text_progress(done: int, total: int) -> None:
            # the text pass comes after the pictures are searchable: a bar of its own
            if not text_task:
                bar.update(task, visible=False)
                text_task.append(bar.add_task("reading text in pictures", total=total))
            bar.update(text_task[0], completed=done, total=total)

        summary = asyncio.run(index_once(settings, progress, text_progress=text_progress, release_models=True))
    print(json.dumps(summary.as_dict()) if args.json else summary.line())
    return 0


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from flows.engine import watch_folder

    def ready() -> None:
        print(f"watching {settings.image_dir} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    try:
        asyncio.run(watch_folder(settings, on_ready=ready))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from api.status import read_status, render_status

    status = read_status(settings)
    print(json.dumps(status, default=str, indent=2) if args.json else render_status(status))
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    from api.status import models_status, render_models
    from core.models.checkpoints import find_checkpoint
    from core.store.db import connect, database_url, ensure_schema
    from core.store.model_state import choose_model

    if args.now and not args.name:
        raise BadRequest("--now needs the NAME of the model to switch to")
    url = database_url(settings)
    ensure_schema(url)
    if args.name:
        find_checkpoint(args.name)  # the configuration only: fails fast
    with connect(url) as conn:
        if args.name:
            choose_model(conn, args.name, switch_now=args.now)
        models = models_status(conn, settings)
    print(json.dumps(models, indent=2) if args.json else render_models(models))
    return 0


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from api.cli import run_search

    return run_search(settings, args)


def cmd_places(settings: Settings, args: argparse.Namespace) -> int:
    from api.cli import run_places

    return run_places(settings, args)


def cmd_people(settings: Settings, args: argparse.Namespace) -> int:
    from api.cli import run_people

    return run_people(settings, args)


def cmd_duplicates(settings: Settings, args: argparse.Namespace) -> int:
    from api.duplicates import duplicate_cache, duplicates_page
    from core.store.db import connect, database_url, table_exists
    from core.store.model_state import model_table, read_choice

    with connect(database_url(settings)) as conn:
        model = read_choice(conn, settings.clip_model).serving
        if not table_exists(conn, model_table(model)):
            raise Unavailable("nothing is indexed in this database yet; run `python main.py index` first")
        page = duplicates_page(
            conn, model, duplicate_cache(), threshold=args.threshold, folder=args.folder, limit=args.limit, offset=0
        )
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(
        f"{page['total_groups']} groups, {page['images_in_groups']} images, threshold {page['threshold']} "
        "(nothing is deleted by Sightline)",
        file=sys.stderr,  # stdout stays one group line, then one image per line, for scripts
    )
    for n, group in enumerate(page["groups"], start=1):
        print(f"group {n}\t{group['kind']}\t{group['count']} images\tsimilarity {group['similarity']:.4f}")
        for image in group["images"]:
            date = (image["taken_at"] or "")[:16].replace("T", " ")
            dims = f"{image['width']}x{image['height']}"
            print(f"\t{image['path']}\t{image['size']} bytes\t{dims}\t{date}\t{image['similarity']:.4f}")
    if page["has_more"]:
        print(f"... {page['total_groups'] - args.limit} more groups (--limit)", file=sys.stderr)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.security import check_bind

    host = args.host or settings.host
    port = args.port or settings.port
    check_bind(host, settings)  # before anything starts: the refusal is one line, not a half-started server
    asyncio.run(serve(settings, host, port))
    return 0


async def serve(settings: Settings, host: str, port: int) -> None:
    """The live indexer and the web server side by side in one process, sharing one loaded model.
    The indexer starts once the server is up, so the two never create the schema at once; if the
    indexer stops (no database, say), the server goes on answering, with the reason in its 503s."""
    import uvicorn

    from api.app import create_app
    from core.models.embedder import Embedders
    from core.store.indexer_status import LocalIndexer
    from flows.engine import watch_folder

    embedders = Embedders(settings.compiled_text_dir, settings.compiled_image_dir)
    # scanning from the start: the page must not read "nothing indexed" before the first heartbeat
    local = LocalIndexer(running=True, scanning=True)
    config = uvicorn.Config(
        create_app(settings, embedders, local), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    print(f"Sightline on http://{host}:{port}/  (indexing {settings.image_dir})", flush=True)
    _wait_for_the_indexer_on_signals(server)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    indexer = asyncio.create_task(watch_folder(settings, embedders=embedders, local=local))
    indexer.add_done_callback(_report_indexer_end)
    indexer.add_done_callback(lambda _: setattr(local, "running", False))
    try:
        await serving
    finally:
        indexer.cancel()
        await asyncio.gather(indexer, return_exceptions=True)


def _wait_for_the_indexer_on_signals(server: uvicorn.Server) -> None:
    """uvicorn stops on Ctrl-C or SIGTERM and then raises the same signal again, for the handler
    that was there before it. The default one would end the process before the indexer records
    that it has stopped; this one lets that repeat go (the server is stopping already) and ends
    the process at any other."""
    repeated: list[int] = []

    def handle(sig: int, frame: object) -> None:
        if not server.should_exit or repeated:
            raise KeyboardInterrupt
        repeated.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)


def _report_indexer_end(task: asyncio.Task[None]) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is None:
        return
    known = user_error(exc)
    if known is not None:
        logging.getLogger("sightline.indexer").error("the indexer stopped: %s", known)
    else:
        logging.getLogger("sightline.indexer").error("the indexer stopped", exc_info=exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python main.py", description="Search a folder of images by describing them.")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="live indexer + web server (default)")
    serve.add_argument("--host", default=None, help="address to listen on (HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (PORT)")
    serve.set_defaults(run=cmd_serve)

    index = commands.add_parser("index", help="one incremental update of IMAGE_DIR, then exit")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    index.set_defaults(run=cmd_index)

    watch = commands.add_parser("watch", help="keep the index in sync with IMAGE_DIR (no server)")
    watch.set_defaults(run=cmd_watch)

    search = commands.add_parser("search", help="search by text or by an example image")
    search.add_argument("text", nargs="?", help="what to look for (the query language: README, Search)")
    search.add_argument("--image", help="search by this example image (combined with the text, if any)")
    search.add_argument(
        "--min-match", choices=("strong", "weak", "none"), help="leave out results judged below this level"
    )
    search.add_argument("--place", help="only pictures taken there (a name from `places`)")
    search.add_argument(
        "--sort", choices=("relevance", "date"), help="date: every strong match (or --min-match) by date"
    )
    search.add_argument("--order", choices=("newest", "oldest"), help="with --sort date: newest (default) or oldest")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--offset", type=int, default=0)
    search.add_argument("--json", action="store_true", help="print JSON (the API's result objects)")
    search.set_defaults(run=cmd_search)

    places = commands.add_parser("places", help="the places where the pictures were taken, with counts")
    places.add_argument("--json", action="store_true", help="print JSON (the API's answer)")
    places.set_defaults(run=cmd_places)

    people = commands.add_parser("people", help="the people found in the pictures; name, merge, hide or show one")
    people.add_argument("action", nargs="?", choices=("name", "merge", "hide", "show"), help="what to change")
    people.add_argument("person", nargs="?", default="", help="the person's id, as `people` lists them")
    people.add_argument("value", nargs="*", help="name: the NAME; merge: the id of the person who remains")
    people.add_argument("--hidden", action="store_true", help="also list the hidden people")
    people.add_argument("--json", action="store_true", help="print JSON (the API's answer)")
    people.set_defaults(run=cmd_people)

    dup = commands.add_parser("duplicates", help="groups of exact and near-duplicate images (nothing is deleted)")
    dup.add_argument("--threshold", type=float, default=0.95, help="cosine similarity for near-duplicates, 0.5-1.0")
    dup.add_argument("--folder", help="only this subfolder of IMAGE_DIR")
    dup.add_argument("--limit", type=int, default=100, help="groups to show")
    dup.add_argument("--json", action="store_true", help="print JSON (the API's answer)")
    dup.set_defaults(run=cmd_duplicates)

    model = commands.add_parser(
        "model", help="the model in use and any being built; with NAME, build that one beside it (no downtime)"
    )
    model.add_argument("name", nargs="?", help="a Hugging Face model id or a checkpoint folder to build")
    model.add_argument("--now", action="store_true", help="switch searches to it as soon as the indexer starts on it")
    model.add_argument("--json", action="store_true")
    model.set_defaults(run=cmd_model)

    status = commands.add_parser("status", help="what is indexed, what failed, what the indexer is doing")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv or sys.argv[1:])])
    elif unknown and args.command == "search" and not any(u.startswith("--") for u in unknown):
        # a query may start with the query language's minus ("-red", "-text:draft"): not an option
        args.text = " ".join([*unknown, *([args.text] if args.text else [])])
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    run: Callable[[Settings, argparse.Namespace], int] = args.run
    try:
        return run(get_settings(), args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        known = user_error(exc)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        return 2


def _one_line_for_user_errors(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """The CocoIndex CLI lets our errors through as tracebacks; one the user can fix is one line."""
    known = user_error(exc)
    if known is None:
        sys.__excepthook__(kind, exc, tb)
    else:
        print(f"error: {known}", file=sys.stderr)


if __name__ != "__main__":
    # loaded by the CocoIndex CLI (`cocoindex update main.py`, `cocoindex ls main.py`): it looks for
    # the app here. Run as a script, commands import what they need, so `search` and `status` start
    # without torch.
    sys.excepthook = _one_line_for_user_errors
    from flows.engine import app  # noqa: F401  (importing the engine also registers the lifespan)

if __name__ == "__main__":
    sys.exit(main())
