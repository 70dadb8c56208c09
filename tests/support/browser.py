"""Headless Chromium for the tests that render HTML (skips where it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (Debian: `make browser-setup` as root)")


def headless(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dumped_dom(url: str) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    done = headless("--virtual-time-budget=10000", "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def table_rows(dom: str, table_id: str) -> list[list[str]]:
    """The text cells of the rows of ``<table id=table_id>`` (header row first)."""
    found = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', dom, re.S)
    assert found is not None, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S) for row in rows]
