"""Switching models on a live server: how long the new model takes to cover the collection, and
what searches see meanwhile. The usual way (stop, change the model, re-index, start again) leaves
no search, or a partial one, for the whole re-index."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from bench.common import Report, Server, free_port, main_py, median, percentile, verdict, wait_until
from bench.latency import queries
from bench.serving import _ready
from core.models.checkpoints import local_checkpoint
from core.settings import Settings


def same_weights_elsewhere(model: str, folder: Path) -> str:
    """The model's files under another name: the indexer treats it as a new model, so the switch
    costs exactly what changing to a model of the same size costs."""
    folder.mkdir(parents=True)
    for f in Path(local_checkpoint(model)).iterdir():
        (folder / f.name).symlink_to(f.resolve())
    return str(folder)


def model_switch(settings: Settings, env: dict[str, str], report: Report, work: Path, count: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    other = same_weights_elsewhere(settings.clip_model, work / "switch-model")
    server_env = {**env, "PORT": str(port), "DATA_DIR": str(work / "data-switch")}
    texts = queries(count)
    with (
        Server(main_py("serve"), server_env, work / "serve-switch.log"),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        wait_until(lambda: _ready(base), 600, "the server")
        images = client.get("/api/status").json()["images"]
        before = []
        for text in texts[:50]:
            started = time.perf_counter()
            client.get("/api/search", params={"q": text, "limit": 20}).raise_for_status()
            before.append(time.perf_counter() - started)

        during: list[float] = []
        failures: list[int] = []
        stop = threading.Event()

        def keep_searching() -> None:
            with httpx.Client(base_url=base, timeout=60) as searcher:
                i = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    # never repeated, so every answer pays for the text tower as the ones before did
                    q = f"{texts[i % len(texts)]} number {i}"
                    r = searcher.get("/api/search", params={"q": q, "limit": 20})
                    if r.status_code == 200:
                        during.append(time.perf_counter() - started)
                    else:
                        failures.append(r.status_code)
                    i += 1

        searching = threading.Thread(target=keep_searching)
        searching.start()
        try:
            started = time.perf_counter()
            client.post("/api/model", json={"model": other}).raise_for_status()
            wait_until(lambda: client.get("/api/status").json()["model"] == other, 3600, "the switch")
            switched = time.perf_counter() - started
        finally:
            stop.set()
            searching.join(60)
    report.add(
        "9 model switch",
        f"a new model for {images} images on a live server: chosen → searches use it (searches go on)",
        f"{switched:.1f} s ({images / switched:.1f} images/s)",
        f"{switched:.1f} s without search (stop, re-index, restart)",
        "no downtime",
        "",
        "",
    )
    report.add(
        "9 model switch",
        "searches during it: answered, failed; p50 / p95 before → during",
        f"{len(during)}, {len(failures)} failed; {median(before) * 1000:.0f} / {percentile(before, 95) * 1000:.0f} → "
        f"{median(during) * 1000:.0f} / {percentile(during, 95) * 1000:.0f} ms",
        "",
        "",
        "none fail",
        verdict(not failures and bool(during)),
    )


def main() -> None:
    """`python -m bench.switch --corpus DIR [--model M]`: this part alone, printed as table rows."""
    import argparse
    import os
    import shutil
    import tempfile

    from bench.common import env_for
    from core.settings import get_settings

    os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as `python -m bench`: time what is here
    parser = argparse.ArgumentParser(prog="python -m bench.switch", description=main.__doc__)
    parser.add_argument("--corpus", type=Path, required=True, help="a folder of images")
    parser.add_argument("--model", help="model id or folder (default: CLIP_MODEL)")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sightline-switch-"))
    try:
        shutil.copytree(args.corpus, work / "img")
        base = get_settings()
        settings = base.with_overrides(
            image_dir=work / "img", data_dir=work / "data", database_url="", clip_model=args.model or base.clip_model
        )
        report = Report()
        model_switch(settings, env_for(settings), report, work, args.queries)
        for r in report.rows:
            print(f"| {r.part} | {r.metric} | {r.ours} | {r.usual} | {r.ratio} | {r.target} | {r.met} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
