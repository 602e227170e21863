"""The site in a real browser: Debian's chromium, headless, loads every page.

Pages are served by a loopback http.server that a fixture starts and stops (and one is
opened from disk). For each load, chromium dumps the DOM after its scripts ran, takes a
screenshot, and writes a net log; the tests check the DOM (rank order and scores equal
`leaderboard --json`, links resolve to files of the site, sorting works, no private
number on public pages), that every page renders to a non-blank picture, and that no
page asks for anything from another server. Chromium's own background requests are
resolved to nowhere (`--host-resolver-rules`), so nothing leaves the machine.

Without chromium the tests skip, saying what to install; as root (CI) they must run.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sitedata
from test_site import occurrences

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--window-size=1280,1000",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("chromium is missing: `bash scripts/setup-test-env.sh` (as root) installs it")
        pytest.skip("needs Debian's chromium: run `apt-get install chromium` or "
                    "`bash scripts/setup-test-env.sh` as root")
    return path


# -- a loopback web server ---------------------------------------------------------------


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, int]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                server.requests.append((urllib.parse.urlsplit(self.path).path, int(code)))

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, relative: str) -> str:
        return f"{self.origin}/{relative}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def serve():
    servers = []

    def start(root: Path) -> Server:
        servers.append(Server(root))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


# -- loading a page ------------------------------------------------------------------------


@dataclass
class Loaded:
    url: str
    dom: str
    png: Path
    page_requests: list[str]  # what the page itself asked for (not the browser's own traffic)


def load(chromium: str, url: str, scratch: Path) -> Loaded:
    scratch.mkdir(parents=True)
    png, netlog = scratch / "shot.png", scratch / "net.json"
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'profile'}",
         f"--log-net-log={netlog}", f"--screenshot={png}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return Loaded(url, result.stdout, png, page_requests(netlog))


def page_requests(netlog: Path) -> list[str]:
    """URLs requested with an origin as initiator: a page's subresources, not the browser's
    own update checks (which have none) nor the top-level navigation."""
    events = json.loads(netlog.read_text())["events"]
    return sorted({e["params"]["url"] for e in events
                   if "url" in e.get("params", {}) and "://" in str(e["params"].get("initiator", ""))})


def load_all(chromium: str, urls: list[str], scratch: Path) -> dict[str, Loaded]:
    with ThreadPoolExecutor(2) as pool:  # this machine's two cores
        loaded = pool.map(lambda pair: load(chromium, pair[1], scratch / f"load{pair[0]}"), enumerate(urls))
        return {page.url: page for page in loaded}


NON_BLANK = 0.003  # of the pixels; a blank page has none (the negative control below)


def ink(png: Path) -> float:
    """The share of a screenshot's pixels that are not (near) white."""
    from matplotlib.image import imread

    pixels = imread(str(png))[..., :3]
    return float((pixels < 0.9).any(axis=-1).mean())


class DomReader(HTMLParser):
    """Links and the leaderboard's rows, from a DOM dump."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.rows: list[dict] = []
        self._in_board = False
        self._row: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src", "xlink:href"):
            if attrs.get(key) is not None:
                self.links.append(attrs[key])
        if tag == "table" and "board" in (attrs.get("class") or "").split():
            self._in_board = True
        elif tag == "tr" and self._in_board and "data-id" in attrs:
            self._row = {"id": int(attrs["data-id"]), "values": []}
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._row["values"].append(attrs.get("data-value"))

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_board = False
        elif tag == "tr":
            self._row = None


def read_dom(dom: str) -> DomReader:
    reader = DomReader()
    reader.feed(dom)
    return reader


def site_urls(server: Server) -> list[str]:
    root = server.root
    pages = [p for p in root.rglob("*") if p.suffix in (".html", ".svg") and ".datarun-site" not in p.parts]
    return [server.url(str(p.relative_to(root))) for p in sorted(pages)]


# -- the demo's site, trained for real -----------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from datarun.demo import run_demo, stop_local_runner
    from datarun.store.workspace import Workspace

    root = tmp_path_factory.mktemp("demo") / "ws"
    try:
        result = run_demo(root)
    finally:
        stop_local_runner(Workspace(root))
    return root, Path(result["site"]).parent


def datarun_json(root: Path, *args: str):
    command = [str(Path(sys.executable).with_name("datarun")), "-w", str(root), *args, "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def demo_pages(chromium, demo, serve, tmp_path_factory):
    _, site = demo
    server = serve(site)
    loaded = load_all(chromium, site_urls(server), tmp_path_factory.mktemp("loads"))
    return server, loaded


def test_every_page_renders_and_asks_nothing_of_another_server(demo_pages):
    server, loaded = demo_pages
    assert len(loaded) == 13  # the index, 2 event pages, 8 submission pages, 2 spreads
    for url, page in loaded.items():
        assert ink(page.png) > NON_BLANK, (url, ink(page.png))
        assert all(request.startswith(server.origin + "/") for request in page.page_requests), (
            url, page.page_requests)
    # Chromium asks for /favicon.ico when it shows an SVG file alone: not a link of the site.
    answered = [(path, status) for path, status in server.requests if path != "/favicon.ico"]
    assert answered and all(status == 200 for _, status in answered), answered
    fetched = {path for path, _ in server.requests}
    assert {"/style.css", "/iris/spread.svg", "/diabetes/spread.svg"} <= fetched


def test_every_link_resolves_to_a_file_of_the_site(demo_pages):
    server, loaded = demo_pages
    checked = 0
    for url, page in loaded.items():
        if not url.endswith(".html"):
            continue
        for link in read_dom(page.dom).links:
            if link.startswith("data:"):
                continue
            target = urllib.parse.urlsplit(urllib.parse.urljoin(url, link))
            assert f"{target.scheme}://{target.netloc}" == server.origin, (url, link)
            path = server.root / urllib.parse.unquote(target.path).lstrip("/")
            assert path.is_file(), (url, link)
            if target.fragment:
                assert target.fragment in read_dom(loaded[server.url(str(path.relative_to(server.root)))].dom).ids
            checked += 1
    assert checked > 50


def test_the_boards_rank_and_score_as_the_json_leaderboard(demo_pages, demo):
    root, _ = demo
    server, loaded = demo_pages
    for problem in ("iris", "diabetes"):
        expected = datarun_json(root, "leaderboard", problem, "--event", problem)
        rows = read_dom(loaded[server.url(f"{problem}/index.html")].dom).rows
        assert [row["id"] for row in rows] == [row["id"] for row in expected["rows"]]
        for shown, row in zip(rows, expected["rows"], strict=True):
            rank, team, name, *rest = shown["values"]  # team and name cells carry no value
            n = len(expected["scores"])
            assert int(rank) == row["rank"] and team is None and name is None
            assert [float(v) for v in rest[:n]] == [row["valid"][score] for score in expected["scores"]]
            assert float(rest[n]) == row["contributivity"]
            assert float(rest[n + 4]) == row["cpu_time"] and int(rest[n + 5]) == row["peak_memory"]
        assert "test" not in expected["rows"][0]  # the public JSON has no test scores


def test_a_submission_page_shows_the_json_details(demo_pages, demo):
    root, _ = demo
    server, loaded = demo_pages
    board = datarun_json(root, "leaderboard", "iris")
    best = board["rows"][0]
    shown = datarun_json(root, "submission", "show", str(best["id"]))
    dom = loaded[server.url(f"iris/{best['id']}.html")].dom
    for task in shown["tasks"]:
        for value in task["scores"]["valid"].values():
            assert f'data-value="{value!r}"' in dom
    # No test column (the real scores here repeat, e.g. 1.0: the search for private numbers
    # runs on data built to keep them apart, below).
    assert "test accuracy" not in dom and "bagged (test)" not in dom
    assert f"{best['team']} / {best['name']}" in dom
    assert 'class="layer"' in dom and 'src="spread.svg"' in dom


def test_the_sorting_script_sorts_and_the_page_reads_the_same_without_it(chromium, demo_pages, demo, tmp_path):
    root, _ = demo
    server, loaded = demo_pages
    board = datarun_json(root, "leaderboard", "iris", "--event", "iris")["rows"]
    url = server.url("iris/index.html")
    by_cpu = load(chromium, url + "#sort=-cpu", tmp_path / "cpu")
    assert [r["id"] for r in read_dom(by_cpu.dom).rows] == [
        r["id"] for r in sorted(board, key=lambda r: -r["cpu_time"])]
    header = re.search(r'<th data-key="cpu"[^>]*>', by_cpu.dom).group(0)
    assert 'aria-sort="descending"' in header and 'title="sort by CPU"' in header
    by_team = load(chromium, url + "#sort=team", tmp_path / "team")
    assert [r["id"] for r in read_dom(by_team.dom).rows] == [
        r["id"] for r in sorted(board, key=lambda r: r["team"])]
    # Without the hash, the rows come in rank order from the file itself.
    assert [r["id"] for r in read_dom(loaded[url].dom).rows] == [r["id"] for r in board]


def test_a_page_opened_from_disk_renders(chromium, demo, tmp_path):
    _, site = demo
    page = load(chromium, (site / "iris" / "index.html").as_uri(), tmp_path / "disk")
    assert ink(page.png) > NON_BLANK
    assert "Iris species: public leaderboard of event iris" in page.dom
    assert all(url.startswith("file://") for url in page.page_requests)


def test_the_checks_catch_a_blank_page_and_an_outside_request(chromium, serve, tmp_path):
    """Negative controls: the same checks fail on a blank page and on one that asks for an
    image from elsewhere (which the resolver rules keep from leaving the machine)."""
    site = tmp_path / "bad"
    site.mkdir()
    (site / "blank.html").write_text("<!doctype html><title>blank</title>")
    (site / "outside.html").write_text('<!doctype html><p>text</p><img src="http://example.org/x.png">')
    server = serve(site)
    blank = load(chromium, server.url("blank.html"), tmp_path / "blank")
    assert ink(blank.png) < NON_BLANK / 10
    outside = load(chromium, server.url("outside.html"), tmp_path / "outside")
    assert "http://example.org/x.png" in outside.page_requests


# -- public means public, in the browser ---------------------------------------------------


def test_no_private_number_reaches_a_public_page(chromium, workspace, cli, serve, tmp_path):
    ids = sitedata.make_workspace(workspace, cli)
    out = tmp_path / "out"
    assert cli("site", out).exit_code == 0
    server = serve(out)
    loaded = load_all(chromium, site_urls(server), tmp_path / "loads")
    assert len(loaded) == 11  # index, 3 events, 5 submissions, the spreads of iris and spring
    private = sitedata.private_numbers(cli, ids)
    for url, page in loaded.items():
        assert ink(page.png) > NON_BLANK, (url, ink(page.png))
        leaks = [(n, occurrences(page.dom, n)) for n in private if occurrences(page.dom, n)]
        assert not leaks, (url, leaks)
        assert "<script>alert" not in page.dom  # a team's name stays text
    bob = loaded[server.url(f"iris/{ids['bob']}.html")].dom
    assert "o'hara &lt;script&gt;alert(1)&lt;/script&gt;" in bob
