"""Procedural 32×32 scenes of coloured shapes (0–2 of each of four colours), drawn with numpy.

Each shape sits inside one cell of the 4×4 grid of vision patches, so every visual token sees at
most one shape: counting is then a question of attending to the right tokens, which a few-hundred-
step model can learn. Colours are jittered so that perception is not an exact pixel lookup.

At ``image_scale`` s > 1 (docs/testbed.md, "FRANK's premise, variant 2") the same scene is drawn
s times larger, each cell spanning s×s patches, and each shape inside one of its cell's patches
chosen at random: more visual tokens, most of them background, as in real images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frankmerge.testbed.trained.vocab import COLOURS, EMPTY_CELL, IMAGE_PX, PATCH, image_px

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 70, 220),
    "yellow": (230, 210, 40),
}
KINDS: tuple[str, ...] = ("square", "disc", "triangle")
MAX_PER_COLOUR = 2
GRID = IMAGE_PX // PATCH


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    cell: int  # 0..GRID²-1, row-major
    size: int  # side / diameter in pixels


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]

    def count(self, colour: str) -> int:
        return sum(shape.colour == colour for shape in self.shapes)

    def grid_words(self, empty: str) -> list[str]:
        """The scene as text in the image's layout: one word per grid cell in reading order (``empty``
        where no shape is), so text and image present a scene as the same 16 positions."""
        words = [empty] * (GRID * GRID)
        for shape in self.shapes:
            words[shape.cell] = shape.colour
        return words


def random_scene(rng: np.random.Generator, max_per_colour: int = MAX_PER_COLOUR) -> Scene:
    """0..max_per_colour shapes of each colour (uniform), uniform kinds and sizes, distinct cells."""
    colours = [c for c in COLOURS for _ in range(int(rng.integers(0, max_per_colour + 1)))]
    cells = rng.choice(GRID * GRID, size=len(colours), replace=False)
    order = rng.permutation(len(colours))
    shapes = tuple(
        Shape(colours[i], KINDS[int(rng.integers(len(KINDS)))], int(cell), int(rng.integers(4, 8)))
        for i, cell in zip(order, cells, strict=True)
    )
    return Scene(shapes)


@dataclass(frozen=True)
class Picture:
    """A rendered scene and the word of each of its patches in reading order: the colour of the
    shape drawn in it, else the empty-cell word (what the stage-1 embedding term aims each patch at)."""

    image: np.ndarray
    patch_words: tuple[str, ...]


def draw(scene: Scene, rng: np.random.Generator, image_scale: int = 1) -> Picture:
    """Light noisy background, each shape at a random offset inside one patch of its cell (the
    cell's only patch at ``image_scale`` 1, then (32, 32, 3) uint8)."""
    side = image_px(image_scale)
    patches_per_row = side // PATCH
    words = [EMPTY_CELL] * patches_per_row**2
    image = rng.integers(225, 256, size=(side, side, 3)).astype(np.int16)
    for shape in scene.shapes:
        row, col = divmod(shape.cell, GRID)
        if image_scale > 1:  # only then, so scale-1 scenes draw exactly what they always drew
            sub_row, sub_col = (int(rng.integers(0, image_scale)) for _ in range(2))
            row, col = row * image_scale + sub_row, col * image_scale + sub_col
        off_y, off_x = (int(rng.integers(0, PATCH - shape.size + 1)) for _ in range(2))
        y0, x0 = row * PATCH + off_y, col * PATCH + off_x
        mask = _mask(shape.kind, shape.size)
        colour = np.clip(np.array(RGB[shape.colour]) + rng.integers(-25, 26, size=3), 0, 255)
        region = image[y0 : y0 + shape.size, x0 : x0 + shape.size]
        region[mask] = colour
        words[row * patches_per_row + col] = shape.colour
    return Picture(image.astype(np.uint8), tuple(words))


def _mask(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if kind == "square":
        return np.ones((size, size), dtype=bool)
    if kind == "disc":
        return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2) ** 2
    return np.abs(xx - size / 2) <= yy / 2  # triangle, apex up
