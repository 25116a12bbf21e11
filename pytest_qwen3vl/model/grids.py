"""Image grids: the (T, H, W) patch grids of the images passed in one call of the vision encoder."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pytest_qwen3vl.errors import GridError

# The released image processor's pixel budget (longest_edge 16777216 pixels, 16x16 pixels a patch):
# no image it emits has more patches than this. A larger grid is a typo, never a user's input.
MAX_PATCHES = 16777216 // (16 * 16)
# Its lower bound (shortest_edge 65536 pixels): a grid below it is a valid input it never emits.
MIN_PATCHES = 65536 // (16 * 16)
# Eager attention holds a few (scores, softmax, their product's inputs) float32 [heads, n, n] tensors
# for an image of n patches at once.
_ATTENTION_COPIES = 3


def physical_memory() -> int:
    """This machine's memory in bytes: what a grid's attention is compared with."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Memory in bytes that can be had now without swapping (``MemAvailable``; where the kernel does not
    say, free pages): what an optional model built mid-run is compared with."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass(frozen=True)
class Grid:
    """The (T, H, W) patch grids of the images passed in one call of the vision encoder."""

    images: tuple[tuple[int, int, int], ...]

    @classmethod
    def parse(cls, text: str) -> Grid:
        """Parse ``T,H,W`` or several images joined with ``+`` (``1,24,24+1,20,20``)."""
        text = text.strip()
        if not text:
            raise GridError("empty grid; expected T,H,W such as 1,24,24")
        images = []
        for part in text.split("+"):
            fields = [f.strip() for f in part.split(",")]
            if len(fields) != 3 or not all(f.isascii() and f.isdigit() for f in fields):
                raise GridError(f"{text!r}: {part.strip()!r} is not three positive integers T,H,W")
            t, h, w = (int(f) for f in fields)
            if min(t, h, w) <= 0:
                raise GridError(f"{text!r}: T, H and W must be positive, got {part.strip()}")
            if h * w > MAX_PATCHES:
                raise GridError(f"{text!r}: {h}x{w} = {h * w} patches is beyond the released image processor's "
                                f"budget of {MAX_PATCHES} patches an image (16777216 pixels)")
            images.append((t, h, w))
        return cls(tuple(images))

    def check_merge(self, merge_size: int) -> None:
        """H and W must be multiples of the spatial merge size, or the merger cannot pool them."""
        for t, h, w in self.images:
            if h % merge_size or w % merge_size:
                raise GridError(
                    f"{self.text}: H and W must be divisible by the merge size "
                    f"{merge_size}, got {t},{h},{w}"
                )

    def check_memory(self, heads: int, available: int | None = None) -> None:
        """Refuse a grid whose eager attention alone would not fit in this machine's memory, before any
        work: its largest image's [heads, n, n] float32 tensors, a few at once."""
        largest = max(t * h * w for t, h, w in self.images)
        need = _ATTENTION_COPIES * heads * largest * largest * 4
        have = available if available is not None else physical_memory()
        if need > have:
            raise GridError(f"{self.text}: eager attention on {largest} patches with {heads} heads needs about "
                            f"{need / 2**30:.0f} GiB, this machine has {have / 2**30:.0f} GiB")

    @property
    def id(self) -> str:
        """Test id: ``1x24x24``, several images joined with ``+``."""
        return "+".join("x".join(str(v) for v in image) for image in self.images)

    @property
    def text(self) -> str:
        """The option syntax, as a user would type it."""
        return "+".join(",".join(str(v) for v in image) for image in self.images)

    @property
    def num_patches(self) -> int:
        """N, the number of rows of ``pixel_values``: the sum of T*H*W over images."""
        return sum(t * h * w for t, h, w in self.images)


SWEEP_NAME = "sweep"
# The report's grid: 384x384 images, what the builder traces at and every run uses unless told otherwise.
DEFAULT_GRID = Grid.parse("1,24,24")
# Grids the released image processor can emit (h * w >= 256 patches, H and W multiples of 2), chosen
# to break what a square grid cannot: a small and a large square, wide and tall, odd merged sizes
# (9 x 11), a video (T = 2), and two images in one call with the same and with different grids.
SWEEP: tuple[Grid, ...] = tuple(
    Grid.parse(text)
    for text in (
        "1,16,16", "1,24,24", "1,48,48", "1,16,40", "1,40,16", "1,18,22", "2,16,16",
        "1,16,16+1,16,16", "1,24,24+1,16,32",
    )
)


def other_grid(grid: Grid, step: int, floor: int = 0) -> Grid:
    """``grid`` with its first image's H and W each moved by ``step`` patches: down where the result
    stays above ``floor``, else up. A grid the trace did not see, with the same number of images."""
    t, h, w = grid.images[0]
    moved = (t, h - step if h - step > floor else h + step, w - step if w - step > floor else w + step)
    return Grid((moved, *grid.images[1:]))
