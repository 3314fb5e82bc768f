"""No connection leaves the machine, by any documented way of running Sightline: CocoIndex's own CLI
on the app (`cocoindex update main.py`; `cocoindex ls main.py` below, without a model), `python main.py
index` and `search`, and `make run` with a live change. Each starts from a user's environment, without
the variables the suite sets for itself (COCOINDEX_DISABLE_USAGE_TRACKING, HF_HUB_OFFLINE): the
defaults must be private. Three libraries report home unless told not to before they load: CocoIndex,
onnxruntime (OCR, the compiled text tower) and Hugging Face's hub (core/privacy.py).

Each process runs under tests/netwatch.py, which records the system calls themselves, so native code
(CocoIndex's engine is Rust, onnxruntime C++) cannot slip past it the way it slips past Python's socket
module. onnxruntime's first report leaves some seconds after a session starts, later than a short run
may last, so `main.py index` also records the switches at the moment each library is imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, TINY_MODEL, env_for, free_port, wait_for
from netwatch import attempts, available, outbound, watched
from shapes import Drawing, draw, write_corpus

from core.privacy import SWITCHES
from core.settings import Settings, load_settings

VENV = Path(sys.prefix)
COCOINDEX = str(Path(sys.executable).parent / "cocoindex")
PTH = ROOT / "no-usage-reports.pth"
SMALL = (Drawing("red", "circle"), Drawing("blue", "square"), Drawing("yellow", "triangle"))
# what the suite sets for its own safety (conftest.py) and a user's shell does not
SUITE_ONLY = ("COCOINDEX_DISABLE_USAGE_TRACKING", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# the CocoIndex CLI's own notice when it finds a .env in the current folder (as it does in the repository)
DOTENV_NOTICE = "Loaded environment variables from:"


@pytest.fixture(autouse=True)
def _watcher() -> None:
    missing = available()
    assert missing is None, missing


@pytest.fixture
def small(tmp_path: Path, database_url: str) -> Settings:
    """A three-picture folder on a fresh database, with the tiny model."""
    write_corpus(tmp_path / "img", SMALL)
    return load_settings(
        {"IMAGE_DIR": str(tmp_path / "img"), "DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": database_url}
        | TINY_MODEL
    )


def user_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = env_for(settings, **extra)
    for name in SUITE_ONLY:
        env.pop(name, None)
    return env


def run_watched(log: Path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(watched(log, *command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def without_the_venvs_switches(folder: Path, record: Path) -> dict[str, str]:
    """Variables for a process that starts without the venv's switches (as from an install without
    `make`), and records in `record` what they were when cocoindex, onnxruntime and huggingface_hub
    were first imported. A sitecustomize runs after the venv's .pth files, before any other import."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import json, os, sys\n"
        f"SWITCHES = {SWITCHES!r}\n"
        "for name in SWITCHES:\n    os.environ.pop(name, None)\n"
        "def record(event, args):\n"  # imports only: torch also looks for onnxruntime (find_spec) without it
        "    if event == 'import' and args[0] in ('cocoindex', 'onnxruntime', 'huggingface_hub'):\n"
        "        with open(os.environ['RECORD_IMPORTS'], 'a') as out:\n"
        "            switches = [os.environ.get(n) for n in SWITCHES]\n"
        "            out.write(json.dumps({'module': args[0], 'switches': switches}) + '\\n')\n"
        "sys.addaudithook(record)\n"
    )
    return {"PYTHONPATH": str(folder), "RECORD_IMPORTS": str(record)}


def descendants(pid: int) -> Iterator[int]:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        yield int(child)
        yield from descendants(int(child))


def stop_the_server_under(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `main.py serve` itself, below the watcher and make, so that it stops as it would."""
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            if b"main.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class TestTheWatcher:
    def test_it_sees_native_calls_and_cocoindexs_own_report_from_its_engine_threads(self, tmp_path: Path) -> None:
        # Nothing leaves: UDP connects send no packet, and CocoIndex's report (opted in here, with 0)
        # goes to a proxy on loopback that this script listens as.
        script = tmp_path / "calls-out.py"
        script.write_text(
            "import contextlib, ctypes, os, socket, struct\n"
            "with contextlib.suppress(OSError):  # no route is fine: the attempt is what counts\n"
            "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(('192.0.2.1', 9))\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"  # through libc, past the socket module
            "address = struct.pack('=H', socket.AF_INET) + struct.pack('>H', 9) + socket.inet_aton('198.51.100.7')\n"
            "ctypes.CDLL(None).connect(s.fileno(), address + bytes(8), 16)\n"
            "proxy = socket.create_server(('127.0.0.1', 0))\nproxy.settimeout(60)\n"
            "os.environ['HTTPS_PROXY'] = 'http://127.0.0.1:%d' % proxy.getsockname()[1]\n"
            "os.environ['COCOINDEX_DISABLE_USAGE_TRACKING'] = '0'\n"
            "import cocoindex\n"
            "request = proxy.accept()[0].recv(200).split(b'\\r\\n')[0].decode()\n"
            "with open(os.environ['ANSWER'], 'w') as answer:\n"
            "    answer.write('%d %d %s' % (os.getpid(), proxy.getsockname()[1], request))\n"
        )
        log = tmp_path / "net.log"
        answer = tmp_path / "answer.txt"
        env = {k: v for k, v in os.environ.items() if k not in ("NO_PROXY", "no_proxy")} | {"ANSWER": str(answer)}
        done = subprocess.run(watched(log, sys.executable, str(script)), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # in a file of its own: CocoIndex's engine threads log the report's failure to the same stdout,
        # which can land in the middle of a printed line
        main_thread, port, request = answer.read_text().split(" ", 2)
        assert request.startswith("CONNECT cocoindex.gateway.scarf.sh:443")
        assert {(a.host, a.port) for a in outbound(log)} == {("192.0.2.1", 9), ("198.51.100.7", 9)}
        reports = [a for a in attempts(log) if (a.host, a.port) == ("127.0.0.1", int(port))]
        assert reports and all(a.pid != int(main_thread) for a in reports), attempts(log)


class TestNoConnectionLeaves:
    def test_the_venv_starts_with_every_report_off(self) -> None:
        installed = Path(sysconfig.get_path("purelib")) / "sightline-no-usage-reports.pth"
        assert installed.exists() and installed.read_text() == PTH.read_text(), "run `make .venv/.no-usage-reports`"
        show = [sys.executable, "-c", f"import os; print(*(os.environ[n] for n in {SWITCHES!r}))"]
        bare = {k: v for k, v in os.environ.items() if k not in SWITCHES}
        for value, seen in ((None, "1"), ("", "1"), ("0", "0")):
            env = bare if value is None else bare | dict.fromkeys(SWITCHES, value)
            shown = subprocess.run(show, env=env, capture_output=True, text=True).stdout.split()
            assert shown == [seen] * len(SWITCHES), (value, shown)
        # every make target that runs the app installs it first
        for target in ("run", "index", "watch", "test"):
            assert any("sightline-no-usage-reports.pth" in line for line in make_dry_run(target)), target

    def test_every_documented_command_connects_to_nothing_beyond_this_machine(
        self, small: Settings, tmp_path: Path
    ) -> None:
        logs = {name: tmp_path / f"{name}.log" for name in ("index", "update", "run", "search")}
        main = [sys.executable, str(ROOT / "main.py")]
        # main.py on its own, without the venv's help (see `without_the_venvs_switches`), reading text
        # in the pictures: onnxruntime as well as cocoindex and transformers
        bare = without_the_venvs_switches(tmp_path / "bare", tmp_path / "imports.jsonl")
        indexed = run_watched(logs["index"], [*main, "index"], user_env(small, OCR="on", **bare))
        assert "added 3, updated 0, deleted 0, unchanged 0, failed 0" in indexed.stdout, indexed.stderr
        imported = [json.loads(line) for line in (tmp_path / "imports.jsonl").read_text().splitlines()]
        assert {"cocoindex", "onnxruntime", "huggingface_hub"} <= {i["module"] for i in imported}, imported
        assert all(i["switches"] == ["1"] * len(SWITCHES) for i in imported), imported
        # CocoIndex's CLI imports cocoindex before main.py; its report goes out on each update, too
        updated = run_watched(logs["update"], [COCOINDEX, "update", "main.py"], user_env(small))
        assert updated.returncode == 0, updated.stderr

        port = free_port()
        # `make run` as such (the venv already installed, with the Makefile's own environment), reading
        # the text in a new picture
        make = ["make", "-s", "-o", f"{VENV}/.installed", "-o", f"{VENV}/.no-usage-reports", "run", f"VENV={VENV}"]
        out = open(tmp_path / "server.out", "wb")  # noqa: SIM115
        env = user_env(small, PORT=str(port), OCR="on")
        server = subprocess.Popen(watched(logs["run"], *make), cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            base = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                assert server.poll() is None, (tmp_path / "server.out").read_text()
                try:
                    body = httpx.get(f"{base}/api/status", timeout=2).json()
                except (httpx.TransportError, ValueError):
                    return False
                return bool(body["live"] and not body["scanning"])

            wait_for(ready, timeout=120)
            draw(Drawing("green", "circle"), width=90, height=90).save(small.image_dir / "new.png")
            wait_for(lambda: "new.png" in httpx.get(f"{base}/api/search", params={"q": "a green circle"}).text)
            searched = run_watched(
                logs["search"], [*main, "search", "a red circle", "--limit", "1"], user_env(small, PORT=str(port))
            )
            assert searched.returncode == 0 and "red-circle.png" in searched.stdout, searched.stderr
        finally:
            stop_the_server_under(server)
            out.close()
        for name, log in logs.items():
            assert outbound(log) == [], (name, outbound(log))
        # the watcher saw each one's own connections: the database's socket; the search, the server's port
        for name in ("index", "update", "run"):
            assert any(".s.PGSQL." in a.host for a in attempts(logs[name])), (name, attempts(logs[name]))
        assert any((a.host, a.port) == ("127.0.0.1", port) for a in attempts(logs["search"]))


class TestWithoutTheModel:
    def test_cocoindex_ls_says_in_one_line_what_is_missing_and_what_to_do(
        self, small: Settings, tmp_path: Path
    ) -> None:
        env = user_env(small, CLIP_MODEL="openai/clip-vit-base-patch32", HF_HOME=str(tmp_path / "hf"))
        env["HF_HUB_OFFLINE"] = "1"  # a machine without the hub (the download itself is the one documented fetch)
        log = tmp_path / "ls.log"
        done = run_watched(log, [COCOINDEX, "ls", "main.py"], env)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(DOTENV_NOTICE)]
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: Cannot load CLIP_MODEL='openai/clip-vit-base-patch32'"), lines
        assert "CLIP_MODEL=tests/fixtures/tiny-clip" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
        assert outbound(log) == []


def make_dry_run(target: str) -> list[str]:
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()
