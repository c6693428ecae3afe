"""A synthetic stand-in for LSUN whose answer is known: procedurally drawn rooms and towers.

Both classes draw their colours from the same distribution, so only structure tells them apart
(a room is a box seen from inside, a tower a tall shape against the sky); every image varies in
layout, palette, clutter and sensor noise, which no augmentation imitates.

It is a positive control for the standard set (rotation, brightness, horizontal flip). A mirror,
a camera roll of up to 20 degrees or an exposure change leaves a room a room and a tower a tower,
and val and test images come in every such pose: mirrored or not, rolled by up to +-20 degrees,
exposed at 0.8 to 1.2. The small training set does not: it is photographed one way only (rooms
seen from their left, towers standing left of centre, camera level, one exposure). A network
that sees only the training images must learn those invariances from too few examples; the
standard set shows it exactly what val and test hold, so it should generalize better, and how
much better is what a run measures.

Drawn at 2.5x size on a margin, then rotated, cropped and downsampled, so edges are anti-aliased
like a photograph's.
"""

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("room", "tower")
VERSION = 3  # changes whenever the drawing changes, so that a cached demo is drawn again
CANVAS = 160  # drawing size before rotation and cropping


def _colour(rng, low=40, high=230):
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _shade(colour, factor):
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def _clutter(draw, rng, count):
    """Boxes and blobs of random colour: present in both classes, so they tell nothing apart."""
    for _ in range(count):
        x, y = rng.integers(0, CANVAS, 2)
        w, h = rng.integers(4, 30), rng.integers(4, 70)  # some tall and thin, like a tower
        box = [int(x), int(y), int(x + w), int(y + h)]
        if rng.random() < 0.5:
            draw.rectangle(box, fill=_colour(rng))
        else:
            draw.ellipse(box, fill=_colour(rng))


def _room(draw, rng):
    # Seen from the room's left: the back wall sits left of centre.
    x0, y0 = rng.integers(20, 50), rng.integers(30, 65)
    x1, y1 = x0 + rng.integers(40, 65), y0 + rng.integers(35, 60)
    wall, floor = _colour(rng), _colour(rng)
    c = CANVAS
    draw.polygon([(0, 0), (c, 0), (x1, y0), (x0, y0)], fill=_shade(wall, rng.uniform(0.8, 1.25)))
    draw.polygon([(0, 0), (x0, y0), (x0, y1), (0, c)], fill=_shade(wall, rng.uniform(0.7, 1.1)))
    draw.polygon([(c, 0), (x1, y0), (x1, y1), (c, c)], fill=_shade(wall, rng.uniform(0.7, 1.1)))
    draw.polygon([(0, c), (x0, y1), (x1, y1), (c, c)], fill=floor)
    draw.rectangle([x0, y0, x1, y1], fill=wall)
    for k in range(int(rng.integers(0, 6))):  # floor boards converge on the back wall
        t = (k + 1) / 7
        draw.line([(x0 + t * (x1 - x0), y1), (t * c, c)], fill=_shade(floor, 0.7), width=2)
    if rng.random() < 0.7:  # a window or a picture on the back wall
        wx = x0 + rng.integers(4, max(5, (x1 - x0) // 2))
        draw.rectangle([wx, y0 + 6, wx + rng.integers(10, 22), y0 + rng.integers(16, 30)], fill=_colour(rng))
    if rng.random() < 0.8:  # a bed, table or sofa on the floor
        fx, fy = rng.integers(10, c - 60), rng.integers(y1 + 5, c - 20)
        draw.rectangle([fx, fy, fx + rng.integers(30, 60), fy + rng.integers(12, 30)], fill=_colour(rng))
    _clutter(draw, rng, int(rng.integers(2, 9)))


def _tower(draw, rng):
    sky, ground = _colour(rng), _colour(rng)
    horizon = int(rng.integers(95, 140))
    for y in range(horizon):  # sky gradient towards the horizon
        draw.line([(0, y), (CANVAS, y)], fill=_shade(sky, 0.8 + 0.4 * y / horizon))
    draw.rectangle([0, horizon, CANVAS, CANVAS], fill=ground)
    for _ in range(int(rng.integers(0, 4))):  # low buildings or hills on the skyline
        bx, bw, bh = rng.integers(0, CANVAS), rng.integers(20, 60), rng.integers(8, 30)
        draw.rectangle([bx, horizon - bh, bx + bw, horizon], fill=_colour(rng))
    for _ in range(int(rng.integers(1, 3))):
        width = int(rng.integers(8, 26))
        cx = int(rng.integers(30, 75))  # left of centre
        top = int(rng.integers(10, 50))
        body = _colour(rng)
        draw.rectangle([cx - width // 2, top, cx + width // 2, horizon], fill=body)
        draw.rectangle([cx + width // 4, top, cx + width // 2, horizon], fill=_shade(body, 0.7))
        roof = int(rng.integers(8, 30))
        draw.polygon([(cx - width // 2 - 3, top), (cx + width // 2 + 3, top), (cx, top - roof)],
                     fill=_colour(rng))
        for wy in range(top + 8, horizon - 10, int(rng.integers(10, 18))):
            draw.rectangle([cx - 2, wy, cx + 2, wy + 5], fill=_shade(body, 0.4))
    _clutter(draw, rng, int(rng.integers(2, 9)))


# How each split is photographed: (mirror probability, largest roll in degrees, exposure range).
# Training images come one way only; val and test in every pose the standard set imitates.
POSES = {"train": (0.0, 0.0, (0.95, 1.05)), "val": (0.5, 20.0, (0.8, 1.2)), "test": (0.5, 20.0, (0.8, 1.2))}


def draw_scene(label, rng, size, split="test"):
    """One uint8 image [size, size, 3] of class CLASS_NAMES[label], drawn from rng and
    photographed as the split's pose says."""
    mirror, roll, exposure = POSES[split]
    image = Image.new("RGB", (CANVAS, CANVAS))
    (_room if label == 0 else _tower)(ImageDraw.Draw(image), rng)
    if rng.random() < mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.rotate(float(rng.uniform(-roll, roll)), resample=Image.Resampling.BILINEAR)
    # A 20 degree roll leaves a valid centre of about CANVAS / 1.28 = 125 px: crop inside it.
    crop, jitter = 112, 6
    left, top = (CANVAS - crop) // 2 + rng.integers(-jitter, jitter + 1, 2)
    image = image.crop((int(left), int(top), int(left) + crop, int(top) + crop))
    image = image.resize((size, size), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(*exposure)
    pixels += rng.normal(0.0, rng.uniform(6, 24), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def draw_split(split, per_class, size, seed, on_image=None):
    """per_class images of each class for a split (train, val or test), interleaved by class,
    and their int64 labels. on_image(): called after each image (progress)."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASS_NAMES), dtype=np.int64), per_class)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    for index, label in enumerate(labels):
        images[index] = draw_scene(int(label), rng, size, split)
        if on_image is not None:
            on_image()
    return images, labels
