"""Render the web app's icon (device/web/static/icon.svg) as PNGs for home screens that take no
SVG (iOS's apple-touch-icon, Android's 192/512 manifest icons); run once, commit the output.

    python -m scripts.make_icon

Pillow (installed with the `train` extra, through matplotlib) draws it at 4x and scales down,
which smooths the edges. The shapes are the SVG's, on its 96-unit grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

STATIC = Path(__file__).resolve().parents[1] / "device" / "web" / "static"
SIZES = {"icon-180.png": 180, "icon-192.png": 192, "icon-512.png": 512}
OVERSAMPLE = 4
FAN = [(10, 70), (34, 52), (50, 60), (62, 40), (86, 24), (86, 56)]
CLOSES = [(10, 70), (34, 52), (50, 60), (62, 40)]
DASHES = [((62, 40), (68, 39.5)), ((72, 39.2), (78, 38.7)), ((82, 38.3), (86, 38))]


def render(size: int) -> Image.Image:
    """The icon at `size` px square: dark tile, blue fan, white closes, yellow dashed median."""
    big = size * OVERSAMPLE
    k = big / 96

    def at(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * k, y * k) for x, y in points]

    # No transparent corners: iOS fills them with black, so the tile is full bleed.
    image = Image.new("RGBA", (big, big), "#10161f")
    fan = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    ImageDraw.Draw(fan).polygon(at(FAN), fill=(0x4F, 0xA3, 0xFF, 115))  # fill-opacity .45
    image = Image.alpha_composite(image, fan)
    draw = ImageDraw.Draw(image)
    width = round(5 * k)
    draw.line(at(CLOSES), fill="#e8edf3", width=width, joint="curve")
    for start, end in DASHES:
        draw.line(at([start, end]), fill="#ffd166", width=width)
    return image.resize((size, size), Image.Resampling.LANCZOS).convert("RGB")


def main() -> None:
    for name, size in SIZES.items():
        render(size).save(STATIC / name, optimize=True)
        print(f"wrote {STATIC / name}")


if __name__ == "__main__":
    main()
