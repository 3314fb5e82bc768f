"""`python main.py search`: the same search as the API, printed as a table, plain lines or JSON.

When a Sightline server for the same folder and model is running, the search goes through it (its
model is warm, so a search from a cold shell takes a fraction of a second); otherwise this process
loads the text tower and queries the database itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.search import BadRequest, search_by_vector
from core.db import IMAGES_TABLE, connect, database_url, table_exists
from core.settings import Settings
from flows.images import ImageError, decode_image


class CliError(Exception):
    pass


def search_through_server(settings: Settings, args: argparse.Namespace) -> dict[str, Any] | None:
    """The running server's answer, or None when no server for these settings is listening."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{settings.port}"
    try:
        headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
        with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30, connect=0.3)) as client:
            status = client.get("/api/status").json()
            if status.get("image_dir") != str(settings.image_dir) or status.get("model") != settings.clip_model:
                return None  # some other Sightline
            params = {"limit": args.limit, "offset": args.offset}
            if args.image:
                with open(args.image, "rb") as f:
                    response = client.post("/api/search/image", params=params, files={"file": (args.image, f)})
            else:
                response = client.get("/api/search", params={"q": args.text, **params})
    except (httpx.HTTPError, ValueError, OSError):
        return None
    if response.status_code in (413, 415, 422):
        raise CliError(response.json().get("detail", response.text))
    return response.json() if response.status_code == 200 else None


def search_here(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from flows.model import get_model

    with connect(database_url(settings)) as conn:
        # before loading the model: a database the indexer never ran on has nothing to search
        if not table_exists(conn, IMAGES_TABLE):
            raise CliError("nothing is indexed in this database yet; run `python main.py index` (or serve) first")
        model = get_model(settings.clip_model, settings.device, settings.precision)
        if args.image:
            try:
                data = Path(args.image).read_bytes()
                decoded = decode_image(data, model.preprocessing, max_pixels=settings.max_image_pixels)
            except OSError as exc:
                raise CliError(f"cannot read {args.image}: {exc.strerror or exc}") from None
            except ImageError as exc:
                raise CliError(f"{args.image} is not a usable image: {exc}") from None
            assert decoded.pixels is not None
            vector = model.embed_pixels(decoded.pixels[None])[0]
            query: object = {"image": args.image}
        else:
            vector = model.embed_text(args.text)
            query = args.text
        try:
            hits, more = search_by_vector(
                conn, vector, model=model.name, limit=args.limit, offset=args.offset, ef_search=settings.search_ef
            )
        except BadRequest as exc:
            raise CliError(str(exc)) from None
    results = [h.as_json() for h in hits]
    return {"query": query, "results": results, "limit": args.limit, "offset": args.offset, "has_more": more}


def run_search(settings: Settings, args: argparse.Namespace) -> int:
    args.text = (args.text or "").strip()
    if not args.text and not args.image:
        print('error: give a text to search for, e.g. search "a dog on a beach", or --image PATH', file=sys.stderr)
        return 2
    try:
        page = search_through_server(settings, args) or search_here(settings, args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_page(page, args)
    return 0


def print_page(page: dict[str, Any], args: argparse.Namespace) -> None:
    results = page["results"]
    if args.json:
        print(json.dumps(page, indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(results)} results", title_justify="left")
        for column in ("#", "score", "path", "size", "date"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for rank, r in enumerate(results, start=args.offset + 1):
            date = (r["taken_at"] or "")[:16].replace("T", " ")
            table.add_row(str(rank), f"{r['score']:.3f}", r["path"], f"{r['width']}×{r['height']}", date)
        Console().print(table)
    else:
        for r in results:
            print(f"{r['score']:.4f}\t{r['path']}")
