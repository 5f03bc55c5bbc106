"""The agent hands freed heap memory back to the OS (glibc), so its RSS falls after a backlog."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from device.memory import release_free_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or release_free_memory() is False,
    reason="needs Linux with glibc's malloc_trim",
)

# A fresh interpreter: 40 MB of 2 kB blocks (glibc's heap, not pymalloc's arenas), one block
# allocated after them so glibc cannot shrink the heap from the top on its own, then all but
# that block freed. Prints the resident MB after the free and after the release.
PROGRAM = textwrap.dedent(
    """
    from pathlib import Path
    from device.memory import release_free_memory

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    blocks = [bytes(2000) for _ in range(20_000)]
    last = bytes(2000)
    del blocks
    freed = rss_mb()
    release_free_memory()
    print(freed, rss_mb())
    """
)


def test_release_returns_the_freed_heap_to_the_os() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    freed, released = map(float, done.stdout.split())
    assert freed - released > 25, (freed, released)
