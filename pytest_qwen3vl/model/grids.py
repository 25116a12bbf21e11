"""Image grids: the (T, H, W) patch grids of the images passed in one call of the vision encoder."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_qwen3vl.errors import GridError


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
            if len(fields) != 3 or not all(f.isdigit() for f in fields):
                raise GridError(f"{text!r}: {part.strip()!r} is not three positive integers T,H,W")
            t, h, w = (int(f) for f in fields)
            if min(t, h, w) <= 0:
                raise GridError(f"{text!r}: T, H and W must be positive, got {part.strip()}")
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
