"""The demo's simulated world: prompts as scenes, simulated generators and their defects,
rendering with PIL, the true quality/alignment scores and simulated raters.

Used by `demo` (which generates, caches and loads the dataset); the formulas are documented in
that module's docstring. Every function takes its random generator from the caller, so the
generated files are a function of the seed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

N_RATERS = 15
RATER_BIAS_SD = 0.25
RATING_NOISE_SD = 0.6
TASTE_SD = 0.2

SHAPES = ["circle", "square", "triangle", "star", "diamond", "hexagon"]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220),
           "yellow": (240, 210, 40), "orange": (245, 140, 30), "purple": (140, 60, 180),
           "pink": (240, 130, 180), "brown": (130, 80, 40)}
BACKGROUNDS = {"white background": ((250, 250, 245), (200, 205, 215)),
               "dark background": ((15, 20, 35), (70, 70, 90)),
               "sky background": ((120, 170, 230), (230, 240, 250)),
               "sunset background": ((250, 180, 120), (120, 80, 140))}
SIZES = {"": 0.10, "large shapes": 0.13, "small shapes": 0.075}
STYLES = ["", "flat style", "outline style"]
RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class GeneratorProfile:
    """A simulated text-to-image generator: ranges of its technical defects, odds of its errors."""

    name: str
    blur: tuple[float, float]
    noise: tuple[float, float]
    bits: tuple[int, int]
    jpeg: tuple[int, int]
    p_missing: float
    p_extra: float
    p_colour: float
    p_swap: float
    p_broken: float


GENERATORS = [
    GeneratorProfile("demo-sharp_normal", (0, 0.5), (0, 4), (8, 8), (80, 95), .05, .05, .05, .05, .03),
    GeneratorProfile("demo-sharp_lowstep", (0, 0.8), (8, 22), (7, 8), (70, 92), .10, .10, .10, .10, .25),
    GeneratorProfile("demo-sharp_lowcorr", (0, 0.6), (0, 6), (8, 8), (75, 95), .30, .25, .35, .40, .05),
    GeneratorProfile("demo-blurry_normal", (1.0, 3.0), (0, 5), (8, 8), (75, 95), .08, .08, .08, .08, .05),
    GeneratorProfile("demo-blurry_lowstep", (0.8, 2.5), (6, 20), (7, 8), (60, 90), .15, .12, .12, .15, .25),
    GeneratorProfile("demo-banded_normal", (0, 0.6), (0, 5), (2, 5), (60, 90), .08, .08, .10, .08, .05),
    GeneratorProfile("demo-jpeg_normal", (0, 0.6), (0, 5), (7, 8), (5, 35), .08, .08, .08, .08, .05),
    GeneratorProfile("demo-gan_normal", (0.5, 2.0), (5, 25), (4, 8), (30, 80), .35, .20, .40, .35, .60),
]


@dataclass(frozen=True)
class Group:
    """`count` objects of one colour and shape, e.g. two red circles."""

    count: int
    colour: str
    shape: str


@dataclass(frozen=True)
class Scene:
    """What a prompt asks for: one or two object groups, their relation, background, size, style."""

    groups: tuple[Group, ...]
    relation: str
    background: str
    size: str
    style: str


@dataclass(frozen=True)
class Defects:
    """What one simulated generator did to one prompt: technical levels and semantic errors."""

    blur: float
    noise: float
    bits: int
    jpeg: int
    n_missing: int
    group_vanished: bool
    n_extra: int
    n_wrong_colour: int
    swapped: bool
    broken: tuple[bool, ...]


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random prompt: one group (40%) or two groups with a spatial relation (60%)."""
    n_groups = 1 if rng.random() < 0.4 else 2
    shapes = rng.choice(SHAPES, size=n_groups, replace=False)
    colours = rng.choice(list(COLOURS), size=n_groups, replace=False)
    groups = tuple(Group(int(rng.integers(1, 4)), str(c), str(s)) for c, s in zip(colours, shapes))
    relation = str(rng.choice(list(RELATIONS))) if n_groups == 2 else ""
    return Scene(groups, relation, str(rng.choice(list(BACKGROUNDS))),
                 str(rng.choice(list(SIZES))), str(rng.choice(STYLES)))


def describe(scene: Scene) -> str:
    """The prompt text: "two red circles left of a blue star, dark background, outline style"."""
    def phrase(group: Group) -> str:
        noun = group.shape + ("s" if group.count > 1 else "")
        count = COUNT_WORDS[group.count]
        if count == "a" and group.colour[0] in "aeiou":
            count = "an"
        return f"{count} {group.colour} {noun}"

    text = phrase(scene.groups[0])
    if len(scene.groups) == 2:
        text += f" {scene.relation} {phrase(scene.groups[1])}"
    return ", ".join(part for part in (text, scene.background, scene.size, scene.style) if part)


def corrupt(scene: Scene, profile: GeneratorProfile, rng: np.random.Generator,
            image_size: int) -> tuple[Scene, Defects]:
    """What the generator actually draws for `scene`, and the defects it introduced."""
    groups, n_missing, n_extra, n_wrong, vanished = [], 0, 0, 0, False
    for group in scene.groups:
        count, colour = group.count, group.colour
        if rng.random() < profile.p_missing:
            count, n_missing = count - 1, n_missing + 1
        if rng.random() < profile.p_extra:
            count, n_extra = count + 1, n_extra + 1
        if rng.random() < profile.p_colour:
            colour = str(rng.choice([c for c in COLOURS if c != colour]))
            n_wrong += 1
        if count == 0:
            vanished = True
            continue
        groups.append(Group(count, colour, group.shape))
    swapped = len(groups) == 2 and rng.random() < profile.p_swap
    relation = RELATIONS[scene.relation] if swapped else scene.relation
    n_drawn = sum(g.count for g in groups)
    broken = tuple(bool(rng.random() < profile.p_broken) for _ in range(n_drawn))
    scale = image_size / 256
    defects = Defects(blur=float(rng.uniform(*profile.blur)) * scale,
                      noise=float(rng.uniform(*profile.noise)),
                      bits=int(rng.integers(profile.bits[0], profile.bits[1] + 1)),
                      jpeg=int(rng.integers(profile.jpeg[0], profile.jpeg[1] + 1)),
                      n_missing=n_missing, group_vanished=vanished, n_extra=n_extra,
                      n_wrong_colour=n_wrong, swapped=swapped, broken=broken)
    return replace(scene, groups=tuple(groups), relation=relation if len(groups) == 2 else ""), defects


def shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of `shape` centred at (cx, cy) with radius r, rotated by `angle`."""
    if shape == "star":
        radii, n = [r if k % 2 == 0 else 0.45 * r for k in range(10)], 10
    else:
        n = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[shape]
        radii = [r] * n
    offset = {"square": math.pi / 4}.get(shape, -math.pi / 2) + angle
    squash = 0.65 if shape == "diamond" else 1.0
    return [(cx + squash * radii[k] * math.cos(offset + 2 * math.pi * k / n),
             cy + radii[k] * math.sin(offset + 2 * math.pi * k / n)) for k in range(n)]


def object_centres(scene: Scene, side: float, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """Centres of every object, group by group, laid out to respect the scene's relation."""
    if len(scene.groups) <= 1:
        regions = [(0.0, 0.0, 1.0, 1.0)]
    else:
        first, second = {"left of": ((0, 0, .5, 1), (.5, 0, 1, 1)),
                         "right of": ((.5, 0, 1, 1), (0, 0, .5, 1)),
                         "above": ((0, 0, 1, .5), (0, .5, 1, 1)),
                         "below": ((0, .5, 1, 1), (0, 0, 1, .5))}[scene.relation]
        regions = [first, second]
    centres = []
    for group, (x0, y0, x1, y1) in zip(scene.groups, regions):
        vertical = (x1 - x0) < (y1 - y0)
        slots = (np.arange(group.count) + 0.5) / group.count
        group_centres = []
        for t in slots:
            u, v = (0.5, t) if vertical else (t, 0.5)
            u += rng.uniform(-0.08, 0.08)
            v += rng.uniform(-0.08, 0.08)
            group_centres.append(((x0 + u * (x1 - x0)) * side, (y0 + v * (y1 - y0)) * side))
        centres.append(group_centres)
    return centres


def gradient(side: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A vertical colour gradient (flat areas would hide banding)."""
    t = np.linspace(0.0, 1.0, side)[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return Image.fromarray(np.broadcast_to(rows, (side, side, 3)).round().astype(np.uint8))


def render(scene: Scene, defects: Defects, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw `scene` (2x supersampled), fragment broken objects, then apply the technical defects."""
    side = 2 * image_size
    top, bottom = BACKGROUNDS[scene.background]
    image = gradient(side, top, bottom)
    draw = ImageDraw.Draw(image)
    bg_mid = tuple((a + b) // 2 for a, b in zip(top, bottom))
    radius = SIZES[scene.size] * side
    outline_width = max(2, int(0.02 * side))
    k = 0
    for group, centres in zip(scene.groups, object_centres(scene, side, rng)):
        colour = COLOURS[group.colour]
        for cx, cy in centres:
            r = radius * rng.uniform(0.85, 1.15)
            fill = None if scene.style == "outline style" else colour
            if group.shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=colour,
                             width=outline_width)
            else:
                points = shape_points(group.shape, cx, cy, r, rng.uniform(-0.25, 0.25))
                draw.polygon(points, fill=fill, outline=colour, width=outline_width)
            if defects.broken[k]:
                for _ in range(int(rng.integers(2, 4))):
                    a, b = rng.uniform(-r, r, size=2), rng.uniform(-r, r, size=2)
                    draw.line((cx + a[0], cy + a[1], cx + b[0], cy + b[1]), fill=bg_mid,
                              width=max(3, int(0.2 * r)))
            k += 1
    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    if defects.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(defects.blur))
    if defects.noise > 0.5:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, defects.noise, size=pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    if defects.bits < 8:
        image = ImageOps.posterize(image, defects.bits)
    return image


def contrast(scene: Scene) -> float:
    """Mean luminance contrast (0-1) between the drawn objects and the background."""
    if not scene.groups:
        return 0.0
    top, bottom = BACKGROUNDS[scene.background]

    def luminance(rgb):
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]

    bg = (luminance(top) + luminance(bottom)) / 2
    values = [min(1.0, 2 * abs(luminance(COLOURS[g.colour]) - bg) / 255) for g in scene.groups]
    return float(np.mean(values))


def true_scores(prompt: Scene, drawn: Scene, defects: Defects, image_size: int) -> tuple[float, float]:
    """Noise-free (quality, alignment) on the 0-5 scale, from the formula in the module docstring."""
    s_blur = min(defects.blur * 256 / image_size / 3.0, 1.0)
    s_noise = min(defects.noise / 30.0, 1.0)
    s_band = (8 - defects.bits) / 6.0
    s_jpeg = float(np.clip((90 - defects.jpeg) / 80.0, 0.0, 1.0))
    technical = (1 - 0.75 * s_blur) * (1 - 0.65 * s_noise) * (1 - 0.5 * s_band) * (1 - 0.6 * s_jpeg)
    broken_frac = float(np.mean(defects.broken)) if defects.broken else 0.0
    coherence = 1 - 0.4 * broken_frac
    appeal = 0.85 + 0.15 * contrast(drawn)
    quality = 0.2 + 4.5 * technical * coherence * appeal

    requested = sum(g.count for g in prompt.groups)
    fidelity = (1 - 0.6 * defects.n_missing / requested - 0.25 * defects.group_vanished
                - 0.12 * defects.n_extra - 0.3 * defects.n_wrong_colour / len(prompt.groups)
                - 0.25 * defects.swapped - 0.25 * broken_frac - 0.15 * s_blur)
    alignment = 0.3 + 4.3 * float(np.clip(fidelity, 0.0, 1.0)) ** 2
    return quality, alignment


def rate(true_score: float, rater_bias: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Mean and standard deviation of simulated ratings of one image (0-5 scale)."""
    ratings = np.clip(true_score + rater_bias + rng.normal(0.0, RATING_NOISE_SD, rater_bias.size), 0, 5)
    return float(ratings.mean()), float(ratings.std(ddof=1))
