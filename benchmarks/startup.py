"""pytest start-up with the plugin installed but unused, over start-up with it disabled.

Prints the ratio of the medians (aim: 1.05 or less). Usage: python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(args: list[str], cwd: Path, runs: int) -> float:
    """Median wall time of a pytest process that collects and runs one trivial test."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                       check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / "test_trivial.py").write_text("def test_trivial():\n    pass\n")
        (cwd / "pytest.ini").write_text("[pytest]\n")
        median_seconds([], cwd, 2)  # warm the file cache for both variants
        used = median_seconds([], cwd, runs)
        disabled = median_seconds(["-p", "no:qwen3vl"], cwd, runs)
    print(f"pytest start-up, plugin installed and unused: {used:.3f} s (median of {runs})")
    print(f"pytest start-up, -p no:qwen3vl:               {disabled:.3f} s (median of {runs})")
    print(f"ratio: {used / disabled:.3f} (aim: <= 1.05)")


if __name__ == "__main__":
    main()
