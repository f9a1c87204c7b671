"""Lighthouse and the Nu HTML checker on a built corpus: the archive's pages as a reader gets them.

Builds the corpus (with the search index) into a temporary folder, serves it with `publisher
serve`'s app on loopback, then

- runs Lighthouse (npm `lighthouse`, driving Debian's /usr/bin/chromium, mobile defaults, no
  network beyond loopback) on the index, a month page and a day page, and prints the four
  category scores and every audit below 1;
- runs the Nu checker (npm `vnu-jar`, Java) over every page the build wrote, and prints its error
  and warning counts with the first few messages.

The thumbnails live on Hugging Face's CDN, which a bench run may not reach: unless --online,
Chromium resolves that host to a loopback HTTPS server (self-signed, certificate errors ignored)
that answers every thumbnail with one 1200x648 PNG, so the pages load as they would online.

Node tools are not project dependencies; install them once where --tools points:

    npm install --prefix ~/.cache/publisher-bench lighthouse vnu-jar
    python bench/site_quality.py [--corpus PATH] [--tools DIR] [--online]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import os
import shutil
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from publisher.config import default_config  # noqa: E402
from publisher.site import build_site  # noqa: E402
from publisher.state import Store  # noqa: E402
from publisher.web import create_app  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS, chromium  # noqa: E402  (the tests' launch)
from tests.net import self_signed_cert  # noqa: E402

CDN_HOST = "cdn-thumbnails.huggingface.co"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
SCORED = ("binary", "numeric", "metricSavings")


def _png(width: int, height: int) -> bytes:
    row = b"\x00" + b"\xdd\xe3\xea" * width
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def fake_cdn(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """HTTPS on loopback answering any path with one PNG (cached a year, like the CDN)."""
    (folder / "cdn").mkdir()
    cert, key = self_signed_cert(folder / "cdn", CDN_HOST)
    png = _png(1200, 648)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def serve(cfg, secret: bytes) -> tuple[uvicorn.Server, str]:  # noqa: ANN001
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    store = Store.open(cfg)
    app = create_app(cfg, secret=secret, store=store)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        threading.Event().wait(0.05)
    return server, base


def lighthouse(tools: Path, url: str, chrome_flags: str) -> dict:
    cmd = [
        str(tools / "node_modules/.bin/lighthouse"),
        url,
        "--output=json",
        "--output-path=stdout",
        "--quiet",
        f"--only-categories={','.join(CATEGORIES)}",
        f"--chrome-flags={chrome_flags}",
    ]
    env = dict(os.environ, CHROME_PATH=str(CHROMIUM))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"lighthouse failed on {url}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def nu_check(tools: Path, pages: list[Path]) -> dict:
    jar = tools / "node_modules/vnu-jar/build/dist/vnu.jar"
    cmd = ["java", "-jar", str(jar), "--format", "json", "--also-check-css", *map(str, pages)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return json.loads(done.stderr or '{"messages": []}')


# English and Korean queries a reader might type; Korean words carry particles ("모델을"), and
# Pagefind has no Korean stemmer, so a query matches a whole word or the start of one.
QUERIES = (
    "speculative decoding",
    "diffusion",
    "추측",
    "디코딩",
    "양자화",
    "강화학습",
    "강화",
    "환각",
)


def search_examples(base: str) -> list[str]:
    """Each query typed into the index page's search box: how many papers it lists (up to 3 per
    day, 10 days) and the first."""
    lines = []
    with chromium() as browser:
        page = browser.new_page()
        page.goto(base)
        for query in QUERIES:
            page.fill("#search-q", query)
            page.wait_for_function(
                "q => document.querySelector('.search-results').dataset.query === q", arg=query
            )
            links = page.locator(".search-results li > a")
            first = links.first.inner_text() if links.count() else "-"
            href = links.first.get_attribute("href") if links.count() else ""
            lines.append(f"  {query!r}: {links.count()} results; first {first[:60]!r} {href}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/corpus/daily_papers_ko")
    ap.add_argument("--tools", type=Path, default=Path.home() / ".cache/publisher-bench")
    ap.add_argument("--online", action="store_true", help="let thumbnails come from the CDN")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus not found at {args.corpus}")
    for need in ("node_modules/.bin/lighthouse", "node_modules/vnu-jar/build/dist/vnu.jar"):
        if not (args.tools / need).exists():
            sys.exit(f"{args.tools / need} not found: npm install --prefix {args.tools} "
                     "lighthouse vnu-jar")  # fmt: skip
    for exe in (str(CHROMIUM), shutil.which("java")):
        if not exe or not Path(exe).exists():
            sys.exit("needs /usr/bin/chromium and java (apt-get install chromium default-jre)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = default_config(root)
        cfg = dataclasses.replace(
            cfg,
            digests=dataclasses.replace(cfg.digests, inbox=args.corpus),
            state=dataclasses.replace(cfg.state, database=str(root / "state.sqlite3")),
        )
        report = build_site(cfg)
        assert report.ok, report.problems
        out = cfg.feed.output
        newest = report.built[0].date
        server, base = serve(cfg, secret=b"Ufd2xj9Qe7mWcL4tZr0NbK8sHaY3vGp1oE6iTqJ5nRw")
        flags = " ".join(["--headless=new", *CHROMIUM_ARGS, "--disable-dev-shm-usage"])
        if not args.online:
            _, port = fake_cdn(root)
            flags += f' --host-resolver-rules="MAP {CDN_HOST}:443 127.0.0.1:{port}"'
            flags += " --ignore-certificate-errors"
        # The pages were built for base_url (localhost:8000); paths are what matter here.
        pages = {
            "index": "",
            "month": f"{newest:%Y/%m}/",
            "day": f"{newest:%Y/%m/%d}/",
        }
        print(f"corpus: {report.days} days from {args.corpus}; served at {base}")
        print(f"{'page':<7}" + "".join(f"{c:>16}" for c in CATEGORIES))
        below: list[str] = []
        for name, path in pages.items():
            result = lighthouse(args.tools, base + path, flags)
            scores = [result["categories"][c]["score"] for c in CATEGORIES]
            print(f"{name:<7}" + "".join(f"{round(s * 100):>16}" for s in scores))
            for audit in result["audits"].values():
                score = audit.get("score")
                mode = audit.get("scoreDisplayMode")
                if (
                    score is not None
                    and score < 1
                    and mode in ("binary", "numeric", "metricSavings")
                ):
                    shown = audit.get("displayValue", "")
                    below.append(f"  {name}: {audit['id']} ({score}): {shown}")
                    items = (audit.get("details") or {}).get("items") or []
                    if audit["id"] in ("errors-in-console", "layout-shifts", "inspector-issues"):
                        below += [f"    {json.dumps(i, ensure_ascii=False)[:300]}" for i in items]
        for line in below:
            print(line)
        print("search (Pagefind, in Chromium):")
        for line in search_examples(base):
            print(line)
        server.should_exit = True

        html = sorted(out.rglob("*.html"))
        html = [p for p in html if "pagefind" not in p.parts]
        nu = nu_check(args.tools, html + [out / "style.css"])
        msgs = nu.get("messages", [])
        errors = [m for m in msgs if m.get("type") == "error"]
        warnings = [m for m in msgs if m.get("type") == "info" and m.get("subType") == "warning"]
        print(f"Nu checker: {len(html)} pages and style.css: {len(errors)} errors, "
              f"{len(warnings)} warnings")  # fmt: skip
        for m in (errors + warnings)[:10]:
            where = m.get("url", "").removeprefix(f"file:{out}/")
            print(f"  {m.get('type')} {where}:{m.get('lastLine', '')}: {m.get('message')}")


if __name__ == "__main__":
    main()
