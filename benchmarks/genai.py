"""What the "In the runtime" claims add to a default run: the conformance suite with and without them.

Each run gets a fresh cache (so the checkpoint, genai's builder and the exports are all paid for).
Prints both wall times, the difference (aim: at most 30 s) and the genai tests alone on a warm cache.
Usage: python benchmarks/genai.py [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall(args: list[str], cache: Path) -> float:
    """Wall time of one pytest process on the conformance suite."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--qwen3vl-cache-dir={cache}",
                    *args], cwd=REPO, check=False, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="2")
    workers = ["-n", parser.parse_args().workers]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        without = wall(["conformance", *workers, "-m", "not qwen3vl_genai"], root / "without")
        with_genai = wall(["conformance", *workers], root / "with")
        warm = wall(["conformance/test_genai.py", "-n", "0"], root / "with")
    print(f"conformance {' '.join(workers)}, without the genai claims: {without:.1f} s")
    print(f"conformance {' '.join(workers)}, with them:                {with_genai:.1f} s")
    print(f"added by the genai claims (cold cache): {with_genai - without:.1f} s (aim: at most 30 s)")
    print(f"the genai claims alone, warm cache, -n 0: {warm:.1f} s")


if __name__ == "__main__":
    main()
