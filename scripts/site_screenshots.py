"""Take the README's two screenshots of the site: the demo's iris leaderboard and its best
submission's page, from a fresh demo workspace, with Debian's chromium (headless).

Run: .venv/bin/python scripts/site_screenshots.py [--out docs]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def shoot(chromium: str, page: Path, png: Path, height: int, scratch: Path) -> None:
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={scratch / png.stem}",
                    f"--window-size=1100,{height}", f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=180)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("error: needs Debian's chromium (`apt-get install chromium`, as root)")
    datarun = str(Path(sys.executable).with_name("datarun"))
    with tempfile.TemporaryDirectory(prefix="datarun-shots-") as tmp:
        scratch = Path(tmp)
        demo = json.loads(subprocess.run([datarun, "demo", "--dir", str(scratch / "ws"), "--json"],
                                         check=True, capture_output=True, text=True).stdout)
        site = Path(demo["site"]).parent
        best = next(board["rows"][0] for board in demo["leaderboards"] if board["problem"] == "iris")
        shoot(chromium, site / "iris" / "index.html", args.out / "site-leaderboard.png", 1250, scratch)
        shoot(chromium, site / "iris" / f"{best['id']}.html", args.out / "site-submission.png", 1000, scratch)
    print(f"wrote {args.out / 'site-leaderboard.png'} and {args.out / 'site-submission.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
