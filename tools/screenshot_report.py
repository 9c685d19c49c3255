"""Renders a `spae demo` report in a real browser (headless Chromium) to a PNG, to look at the page as users do.

  apt-get install chromium                                     # Debian's package; nothing else is needed
  .venv/bin/spae demo && .venv/bin/python tools/screenshot_report.py demo/report.html -o report.png

The page is plain HTML with inline CSS/JS and local images, so it renders offline. `--width` sets the window
width (the figures wrap to fit) and `--height` how much of the page is captured.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def find_chromium() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def screenshot(html: Path, out: Path, width: int = 1400, height: int = 4000, timeout: float = 120.0) -> Path:
  """Writes a `width` x `height` PNG of `html` to `out` (through a temporary file, then a rename)."""
  exe = find_chromium()
  if exe is None:
    raise SystemExit("screenshot_report: no Chromium found; install Debian's `chromium` package")
  if not html.is_file():
    raise SystemExit(f"screenshot_report: {html} is not a file; run `spae demo` first (it writes demo/report.html)")
  tmp = out.with_name(out.name + ".tmp.png")
  cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files",
         f"--window-size={width},{height}", f"--screenshot={tmp.absolute()}", html.absolute().as_uri()]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  if res.returncode != 0 or not tmp.is_file():
    raise SystemExit(f"screenshot_report: Chromium failed ({res.returncode}): {res.stderr.strip()[-300:]}")
  tmp.replace(out)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("report", type=Path, nargs="?", default=Path("demo/report.html"))
  p.add_argument("-o", "--out", type=Path, default=Path("report.png"))
  p.add_argument("--width", type=int, default=1400)
  p.add_argument("--height", type=int, default=4000)
  a = p.parse_args(argv)
  print(screenshot(a.report, a.out, a.width, a.height))
  return 0


if __name__ == "__main__":
  sys.exit(main())
