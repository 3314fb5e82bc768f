"""`python main.py search`: the same search as the API, printed as a table, plain lines or JSON;
`python main.py places`: the places where the pictures were taken; `python main.py people`: the people
found, and naming, merging and hiding them.

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

from api import people
from api.answer import Ask, OneConnection, Upload, answer
from api.places import place_cache, places_of
from api.search import make_filters
from api.serving_models import compile_if_wanted
from core.errors import BadRequest, Unavailable
from core.media.pictures import ImageError, decode_image
from core.models.embedder import Embedder, open_embedder
from core.settings import Settings
from core.store.db import connect, database_url, ensure_schema, table_exists
from core.store.model_state import model_table, read_choice


def search_through_server(settings: Settings, args: argparse.Namespace) -> dict[str, Any] | None:
    """The running server's answer, or None when no server for these settings is listening."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{settings.port}"
    try:
        headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
        with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(30, connect=0.3)) as client:
            status = client.get("/api/status").json()
            configured = (status.get("models") or {}).get("configured")
            if status.get("image_dir") != str(settings.image_dir) or configured != settings.clip_model:
                return None  # some other Sightline
            params: dict[str, Any] = {"limit": args.limit, "offset": args.offset}
            for name in ("min_match", "sort", "order", "place"):
                if getattr(args, name, None):
                    params[name] = getattr(args, name)
            if args.image:
                if args.text:
                    params["q"] = args.text
                with open(args.image, "rb") as f:
                    response = client.post("/api/search/image", params=params, files={"file": (args.image, f)})
            else:
                response = client.get("/api/search", params={"q": args.text, **params})
    except (httpx.HTTPError, ValueError, OSError):
        return None
    if response.status_code in (413, 415, 422):
        raise BadRequest(response.json().get("detail", response.text))
    if response.status_code != 200:
        return None
    page: dict[str, Any] = response.json()
    return page


def search_here(settings: Settings, args: argparse.Namespace) -> tuple[dict[str, Any], Embedder]:
    """The same answer as the server's, computed in this process; and the model it used."""
    with connect(database_url(settings)) as conn:
        # before loading the model: a database the indexer never ran on has nothing to search
        choice = read_choice(conn, settings.clip_model)  # the model in use, which CLIP_MODEL may not be yet
        if not table_exists(conn, model_table(choice.serving)):
            raise Unavailable("nothing is indexed in this database yet; run `python main.py index` (or serve) first")
        embedder = open_embedder(choice.serving, settings.device, settings.precision, settings.compiled_text_dir)
        uploads: list[Upload] = []
        if args.image:
            try:
                data = Path(args.image).read_bytes()
                decoded = decode_image(data, embedder.preprocessing, max_pixels=settings.max_image_pixels)
            except OSError as exc:
                raise BadRequest(f"cannot read {args.image}: {exc.strerror or exc}") from None
            except ImageError as exc:
                raise BadRequest(f"{args.image} is not a usable image: {exc}") from None
            assert decoded.pixels is not None
            uploads.append(Upload(embedder.embed_pixels(decoded.pixels[None])[0], 1.0, args.image))
        echo: object = ({"image": args.image, **({"q": args.text} if args.text else {})}) if args.image else args.text
        ask = Ask(
            q=args.text,
            uploads=tuple(uploads),
            filters=make_filters(place=getattr(args, "place", None)),
            limit=args.limit,
            offset=args.offset,
            min_match=getattr(args, "min_match", None),
            sort=getattr(args, "sort", None),
            order=getattr(args, "order", None),
            echo=echo,
        )
        return answer(OneConnection(conn, embedder, settings), ask), embedder


def run_search(settings: Settings, args: argparse.Namespace) -> int:
    args.text = (args.text or "").strip()
    if not args.text and not args.image:
        raise BadRequest('give a text to search for, e.g. search "a dog on a beach", or --image PATH')
    page = search_through_server(settings, args)
    if page is not None:
        print_page(page, args)
        return 0
    page, embedder = search_here(settings, args)
    print_page(page, args)
    if embedder.needs_compiling():
        # after the answer, once per model: the next search starts without torch (`core.models.text_onnx`)
        sys.stdout.flush()
        print("compiling the text tower for the next searches (once for this model)...", file=sys.stderr, flush=True)
        compile_if_wanted(embedder)
    return 0


def describe(understood: dict[str, Any]) -> str:
    """One line saying how the query was read: its terms and filters."""
    parts = []
    for i, term in enumerate(understood.get("terms", [])):
        weight = term["weight"]
        sign = "-" if weight < 0 else ("+" if i else "")
        size = "" if abs(weight) == 1 else f"{abs(weight):g}:"
        what = term.get("text") or (f"img:{term['image_id']}" if "image_id" in term else f"image {term.get('upload')}")
        parts.append(f"{sign} {size}{what}".strip())
    filters = understood.get("filters", {})
    if "taken_after" in filters:
        parts.append(f"taken {filters['taken_after']} to {filters['taken_before']}")
    for f in filters.get("folders", []):
        parts.append(f"in {f['folder']}/")
    if filters.get("places"):
        parts.append("in " + " or ".join(p["place"] for p in filters["places"]))
    for t in filters.get("text", []):
        parts.append(f'{"not " if t["exclude"] else ""}saying "{t["text"]}"')
    return "searching for " + " ".join(parts) if parts else ""


def print_page(page: dict[str, Any], args: argparse.Namespace) -> None:
    results = page["results"]
    if args.json:
        print(json.dumps(page, indent=2))
        return
    line = describe(page.get("understood") or {})
    score = lambda r: "" if r["score"] is None else f"{r['score']:.3f}"  # noqa: E731
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if line:
            console.print(line, style="dim", highlight=False, markup=False)
        if results and not any(r.get("match") == "strong" for r in results) and args.offset == 0:
            console.print("no good match: the nearest images below do not look like what you described")
        table = Table(title=f"{len(results)} results", title_justify="left")
        for column in ("#", "score", "match", "path", "size", "date", "place", "text"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for rank, r in enumerate(results, start=args.offset + 1):
            date = (r["taken_at"] or "")[:16].replace("T", " ")
            size = f"{r['width']}×{r['height']}"
            place = r.get("place") or {}
            where = ", ".join(n for n in (place.get("city"), place.get("country")) if n)
            table.add_row(str(rank), score(r), r.get("match") or "", located(r), size, date, where, matched_text(r))
        console.print(table)
    else:
        if line:
            print(line, file=sys.stderr)  # stdout stays one result per line for scripts
        for r in results:
            print(f"{'' if r['score'] is None else format(r['score'], '.4f')}\t{located(r)}\t{r.get('match') or ''}")


def matched_text(result: dict[str, Any]) -> str:
    """Where the picture's own words held the query's, and which: `ocr, name: cafe luna`."""
    found = result.get("text_match")
    return f"{', '.join(found['where'])}: {' '.join(found['words'])}" if found else ""


def located(result: dict[str, Any]) -> str:
    """The path, and for a video found by a search, the second that matched (`clip.mp4@12.5s`)."""
    second = result.get("second")
    return result["path"] if second is None else f"{result['path']}@{second:g}s"


def run_places(settings: Settings, args: argparse.Namespace) -> int:
    """The places of the collection with how many pictures each, as lines or JSON."""
    with connect(database_url(settings)) as conn:
        model = read_choice(conn, settings.clip_model).serving
        if not table_exists(conn, model_table(model)):
            raise Unavailable("nothing is indexed in this database yet; run `python main.py index` (or serve) first")
        entries = [e.as_json() for e in places_of(conn, model, place_cache()).entries]
    if args.json:
        print(json.dumps({"places": entries}, indent=2))
        return 0
    for e in entries:
        where = "" if e["kind"] == "country" else ", ".join(e["countries"])
        print(f"{e['images']}\t{e['name']}\t{e['kind']}\t{where}".rstrip("\t"))
    return 0


def run_people(settings: Settings, args: argparse.Namespace) -> int:
    """`people`: the people found, as lines or JSON; `people name ID NAME`, `people merge ID INTO`,
    `people hide ID` and `people show ID`: the same corrections as the API and the page."""
    url = database_url(settings)
    ensure_schema(url)
    with connect(url) as conn:
        if args.action is None:
            found = people.list_people(conn, hidden=args.hidden)
            if args.json:
                print(json.dumps({"people": found}, indent=2))
            for p in [] if args.json else found:
                hidden = "\thidden" if p["hidden"] else ""
                print(f"{p['id']}\t{p['name'] or '(no name)'}\t{p['pictures']} pictures\t{p['faces']} faces{hidden}")
            return 0
        person_id = _person_id(args.person)
        if args.action == "name":
            changed = people.update_person(conn, person_id, name=" ".join(args.value))
        elif args.action == "merge":
            changed = people.merge(conn, person_id, _person_id(args.value[0] if args.value else ""))
        else:
            changed = people.update_person(conn, person_id, hidden=args.action == "hide")
    changed.pop("items", None)
    print(json.dumps(changed, indent=2) if args.json else f"{changed['id']}\t{changed['name'] or '(no name)'}")
    return 0


def _person_id(raw: str) -> int:
    if not raw.isdigit() or int(raw) >= 2**63:
        raise BadRequest(f"{raw!r}: expected a person's id, as `python main.py people` lists them")
    return int(raw)
