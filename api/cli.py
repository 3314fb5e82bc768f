"""`python main.py search`: the same search as the API, printed as a table, plain lines or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.search import BadRequest, search_by_vector
from core.db import connect, database_url
from core.settings import Settings
from flows.images import ImageError, decode_image
from flows.model import get_model


def run_search(settings: Settings, args: argparse.Namespace) -> int:
    text = (args.text or "").strip()
    if not text and not args.image:
        print('error: give a text to search for, e.g. search "a dog on a beach", or --image PATH', file=sys.stderr)
        return 2
    model = get_model(settings.clip_model, settings.device, settings.precision)
    if args.image:
        try:
            data = Path(args.image).read_bytes()
            decoded = decode_image(data, model.preprocessing, max_pixels=settings.max_image_pixels)
        except OSError as exc:
            print(f"error: cannot read {args.image}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except ImageError as exc:
            print(f"error: {args.image} is not a usable image: {exc}", file=sys.stderr)
            return 2
        assert decoded.pixels is not None
        vector = model.embed_pixels(decoded.pixels[None])[0]
        query: object = {"image": args.image}
    else:
        vector = model.embed_text(text)
        query = text
    try:
        with connect(database_url(settings)) as conn:
            hits, more = search_by_vector(
                conn, vector, model=model.name, limit=args.limit, offset=args.offset, ef_search=settings.search_ef
            )
    except BadRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        results = [h.as_json() for h in hits]
        payload = {"query": query, "results": results, "limit": args.limit, "offset": args.offset, "has_more": more}
        print(json.dumps(payload, indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(hits)} results", title_justify="left")
        for column in ("#", "score", "path", "size", "date"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for rank, h in enumerate(hits, start=args.offset + 1):
            date = h.taken_at.strftime("%Y-%m-%d %H:%M") if h.taken_at else ""
            table.add_row(str(rank), f"{h.score:.3f}", h.path, f"{h.width}×{h.height}", date)
        Console().print(table)
    else:
        for h in hits:
            print(f"{h.score:.4f}\t{h.path}")
    return 0
