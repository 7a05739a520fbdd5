"""SynthFace: a procedurally rendered face-attribute benchmark with documented, tunable biases.

No files and no network: every image is drawn with numpy from a seed, in a few seconds; the
rendered splits are kept in the cache folder (``fairbench.data.render_cache``). It is the default
dataset, so that ``fairbench run <method>`` trains out of the box on a CPU and CI can train every
method. Three binary targets carried by small local cues, skin tone x presentation groups, and
three bias mechanisms (:class:`SynthFaceOptions`); the test split is balanced and carries no
spurious cue. The ``synthface-<scenario>`` datasets each isolate one mechanism with one dial.
What is drawn, the mechanisms, the splits and the scenarios: docs/builtin-benchmark.md
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairbench.data import render_cache
from fairbench.data.base import SPLITS, DataSplit, Dataset, DatasetBundle, DatasetError, Task
from fairbench.registry import register_dataset

TARGETS = ("smiling", "eyeglasses", "narrow_eyes")
PROTECTED = ("skin_tone", "presentation")
SKIN_TONES = ("I", "II", "III", "IV")
PRESENTATIONS = ("short_hair", "long_hair")
CLASSES = ["no", "yes"]  # index 1 = attribute present
BACKGROUNDS = ("cool", "warm")  # auxiliary column "background": the spurious cue

#: Base skin colours (RGB in [0, 1]) of tones I..IV, lightest to darkest.
SKIN_RGB = np.array(
    [[0.88, 0.74, 0.64], [0.80, 0.62, 0.49], [0.68, 0.48, 0.35], [0.50, 0.36, 0.28]], dtype=np.float32
)
#: Hair colours: black, dark brown, brown, auburn, blond, grey. Independent of the groups.
HAIR_RGB = np.array(
    [[0.08, 0.07, 0.07], [0.24, 0.15, 0.10], [0.42, 0.28, 0.17], [0.52, 0.24, 0.12],
     [0.80, 0.68, 0.45], [0.66, 0.66, 0.66]],
    dtype=np.float32,
)

# Cue geometry in face units (face half-height = 1). Class ranges do not overlap, but the
# margins are a fraction of a pixel at 64 px, so noise, blur and low contrast make them hard.
# Smile intensity u ~ U(0, 1) per smiling face: the curvature (drop of the mouth centre below
# its corners) grows with u, and above SMILE_OPEN_FROM the mouth opens into a dark crescent.
# Neutral faces have a flat, slightly raised or lowered closed mouth. Weak smiles are the
# hard cases; open smiles are easy.
SMILE_CURVATURE = {0: (-0.08, 0.0), 1: (0.1, 0.24)}
SMILE_OPEN_FROM = 0.0
SMILE_OPENING = 0.28  # opening at u = 1
TEETH_FRACTION = 0.5  # upper part of the opening that shows teeth
EYE_APERTURE = {0: (0.48, 0.72), 1: (0.16, 0.34)}  # eye half-height / half-width
MOUTH_HALF_WIDTH = (0.26, 0.36)
MOUTH_THICKNESS = (0.06, 0.09)
# Darkening of each feature relative to the skin at contrast 1 (RGB units in [0, 1]). They
# are small enough never to reach black on the darkest tone, so with equal ``cue_contrast``
# every tone shows the same absolute cue.
MOUTH_DARKENING = np.array([0.24, 0.32, 0.25], dtype=np.float32)  # reddish lips
TEETH_LIGHTENING = np.array([0.04, 0.12, 0.18], dtype=np.float32)
EYE_DARKENING = 0.2
FRAME_DARKENING = (0.13, 0.2)
FACE_SCALE = 0.56  # mean face half-height, fraction of half the image
SKIN_JITTER = 0.015  # std of the per-image skin colour (clipped at 2 std)


class SynthFaceOptions(BaseModel):
    """Generation parameters of SynthFace; the defaults give the documented benchmark."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(4000, ge=16, description="number of training images")
    n_val: int = Field(1000, ge=16, description="number of validation images (same distribution as train)")
    n_test: int = Field(2000, ge=16, description="number of test images (balanced over group x target class)")
    seed: int = Field(0, ge=0, description="seed of the data generator (same seed = identical images); in a run, train.seed unless set")
    train_skin_tone_shares: tuple[float, float, float, float] = Field(
        (0.45, 0.30, 0.15, 0.10), description="share of skin tones I..IV in train and val (bias 1)"
    )
    train_presentation_shares: tuple[float, float] = Field(
        (0.6, 0.4), description="share of short_hair / long_hair in train and val (bias 1)"
    )
    cue_contrast: tuple[float, float, float, float] = Field(
        (1.0, 0.85, 0.65, 0.5),
        description="contrast of the facial features (target cues) on skin tones I..IV, 1 = full (bias 2)",
    )
    spurious_correlation: float = Field(
        0.2, ge=0.0, le=1.0, description="phi correlation of background family with the target in train/val (bias 3)"
    )
    pose_jitter: float = Field(5.0, ge=0.0, le=45.0, description="maximum in-plane rotation of the face, degrees")
    position_jitter: float = Field(0.04, ge=0.0, le=0.3, description="maximum shift of the face centre, fraction of half the image")
    scale_jitter: float = Field(0.06, ge=0.0, le=0.4, description="relative spread of the face size (uniform +-)")
    lighting_jitter: float = Field(0.2, ge=0.0, le=0.6, description="spread of brightness and of the lighting gradient")
    blur: tuple[float, float] = Field(
        (0.8, 1.6), description="range of edge softness in pixels (focus), drawn per image"
    )
    noise_std: float = Field(0.04, ge=0.0, le=0.5, description="mean std of Gaussian pixel noise (image range 0..1)")

    @model_validator(mode="after")
    def _check(self) -> "SynthFaceOptions":
        for name in ("train_skin_tone_shares", "train_presentation_shares"):
            shares = getattr(self, name)
            if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
                raise ValueError(f"{name} must be non-negative and sum to 1, got {shares}")
        if min(self.cue_contrast) < 0:
            raise ValueError(f"cue_contrast must be non-negative, got {self.cue_contrast}")
        if not 0 < self.blur[0] <= self.blur[1]:
            raise ValueError(f"blur must be a range 0 < low <= high, got {self.blur}")
        return self


# ----------------------------------------------------------------------------------------
# Latent parameters
# ----------------------------------------------------------------------------------------


def _split_seed(seed: int, split: str, target: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split), TARGETS.index(target)])


def _uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))].astype(np.float32)


def sample_split(split: str, n: int, target: str, options: SynthFaceOptions) -> dict[str, np.ndarray]:
    """Draw the labels and every latent rendering parameter of one split (no pixels yet)."""
    rng = np.random.default_rng(_split_seed(options.seed, split, target))
    lat: dict[str, np.ndarray] = {}
    if split == "test":
        # Balanced: every (tone, presentation, target class) cell gets n // 16 (+1 for the
        # first n % 16 cells); inside each cell the background family alternates, starting
        # alike for both classes of a group, so it is independent of the target.
        cells = [(t, p, y) for t in range(4) for p in range(2) for y in range(2)]
        sizes = [n // len(cells) + (i < n % len(cells)) for i in range(len(cells))]
        tone = np.concatenate([np.full(k, c[0]) for c, k in zip(cells, sizes)])
        pres = np.concatenate([np.full(k, c[1]) for c, k in zip(cells, sizes)])
        y = np.concatenate([np.full(k, c[2]) for c, k in zip(cells, sizes)])
        warm = np.concatenate([(np.arange(k) + i // 2) % 2 for i, k in enumerate(sizes)])
        order = rng.permutation(n)
        tone, pres, y, warm = tone[order], pres[order], y[order], warm[order]
    else:
        tone = rng.choice(4, n, p=np.asarray(options.train_skin_tone_shares, dtype=float))
        pres = rng.choice(2, n, p=np.asarray(options.train_presentation_shares, dtype=float))
        y = rng.integers(0, 2, n)
        agree = rng.random(n) < (1.0 + options.spurious_correlation) / 2.0
        warm = np.where(agree, y, 1 - y)
    lat["skin_tone"], lat["presentation"], lat["background"] = tone, pres, warm.astype(np.int64)
    draw_appearance(rng, lat, y, target, options, np.asarray(options.cue_contrast, dtype=np.float32)[tone])
    return lat


def draw_appearance(rng: np.random.Generator, lat: dict[str, np.ndarray], y: np.ndarray, target: str,
                    o: SynthFaceOptions, contrast: np.ndarray) -> None:
    """Draw every rendering latent but the groups and the background (already in ``lat``), in place.

    ``y`` is the task target as drawn (the cue the pixels carry); ``contrast`` the per-image
    feature contrast (negative: features lighter than the skin)."""
    n = len(y)
    tone, pres, warm = lat["skin_tone"], lat["presentation"], lat["background"]
    for name in TARGETS:
        lat[name] = y.astype(np.int64) if name == target else rng.integers(0, 2, n)

    # Pose and framing (normalised image coordinates, [-1, 1]).
    lat["cx"] = _uniform(rng, -o.position_jitter, o.position_jitter, n)
    lat["cy"] = _uniform(rng, -o.position_jitter, o.position_jitter, n) - 0.06
    lat["scale"] = FACE_SCALE * _uniform(rng, 1 - o.scale_jitter, 1 + o.scale_jitter, n)
    lat["roll"] = np.deg2rad(_uniform(rng, -o.pose_jitter, o.pose_jitter, n))
    lat["shift"] = _uniform(rng, -0.06, 0.06, n)  # features slide sideways (yaw-like)
    # Colours.
    jitter = np.clip(rng.normal(0, SKIN_JITTER, (n, 3)), -2 * SKIN_JITTER, 2 * SKIN_JITTER)
    lat["skin"] = (SKIN_RGB[tone] + jitter).astype(np.float32)
    lat["hair"] = np.clip(HAIR_RGB[rng.integers(0, len(HAIR_RGB), n)] * _uniform(rng, 0.85, 1.15, n)[:, None], 0, 1)
    hue = np.where(warm == 1, _uniform(rng, 0.0, 0.14, n), _uniform(rng, 0.5, 0.68, n)).astype(np.float32)
    lat["bg"] = _hsv_to_rgb(hue, _uniform(rng, 0.25, 0.6, n), _uniform(rng, 0.45, 0.85, n))
    lat["shirt"] = _hsv_to_rgb(_uniform(rng, 0, 1, n), _uniform(rng, 0.1, 0.7, n), _uniform(rng, 0.25, 0.9, n))
    # Head shape: half-width of the face, jaw taper and hairline.
    lat["face_a"] = np.where(pres == 0, _uniform(rng, 0.76, 0.82, n), _uniform(rng, 0.70, 0.76, n))
    lat["taper"] = np.where(pres == 0, _uniform(rng, 0.08, 0.16, n), _uniform(rng, 0.24, 0.34, n))
    lat["hairline"] = _uniform(rng, -0.62, -0.48, n)
    # Eyes and brows.
    lat["eye_x"] = _uniform(rng, 0.30, 0.36, n)
    lat["eye_y"] = _uniform(rng, -0.17, -0.09, n)
    lat["eye_w"] = _uniform(rng, 0.13, 0.16, n)
    lo_hi = np.array([EYE_APERTURE[0], EYE_APERTURE[1]], dtype=np.float32)[lat["narrow_eyes"]]
    lat["aperture"] = (lo_hi[:, 0] + (lo_hi[:, 1] - lo_hi[:, 0]) * rng.random(n)).astype(np.float32)
    lat["gaze"] = _uniform(rng, -0.04, 0.04, n)
    lat["brow_h"] = _uniform(rng, 0.2, 0.25, n)
    lat["brow_t"] = _uniform(rng, 0.035, 0.055, n)
    # Mouth.
    lat["mouth_y"] = _uniform(rng, 0.44, 0.54, n)
    lat["mouth_w"] = _uniform(rng, *MOUTH_HALF_WIDTH, n)
    lat["mouth_t"] = _uniform(rng, *MOUTH_THICKNESS, n)
    u = rng.random(n)
    lo_hi = np.array([SMILE_CURVATURE[0], SMILE_CURVATURE[1]], dtype=np.float32)[lat["smiling"]]
    lat["curvature"] = (lo_hi[:, 0] + (lo_hi[:, 1] - lo_hi[:, 0]) * u).astype(np.float32)
    opening = SMILE_OPENING * np.clip((u - SMILE_OPEN_FROM) / (1 - SMILE_OPEN_FROM), 0, 1)
    lat["opening"] = np.where(lat["smiling"] == 1, opening, 0.0).astype(np.float32)
    # Glasses (drawn only where eyeglasses == 1, parameters drawn for everyone).
    lat["frame_r"] = _uniform(rng, 1.3, 1.5, n)  # frame half-width / eye half-width
    lat["frame_t"] = _uniform(rng, 0.035, 0.05, n)
    lat["frame_dark"] = _uniform(rng, *FRAME_DARKENING, n)
    # Feature contrast (bias 2).
    lat["contrast"] = np.asarray(contrast, dtype=np.float32)
    # Photometric nuisance.
    # (mostly darkening, so that the lightest skin does not saturate and lose its cues)
    lat["brightness"] = _uniform(rng, 1 - o.lighting_jitter, 1 + o.lighting_jitter * 0.25, n)
    lat["light_dir"] = _uniform(rng, 0, 2 * np.pi, n)
    lat["light_grad"] = _uniform(rng, 0, o.lighting_jitter * 0.5, n)
    lat["softness"] = _uniform(rng, o.blur[0], o.blur[1], n)
    lat["noise"] = o.noise_std * _uniform(rng, 0.5, 1.5, n)
    lat["noise_seed"] = rng.integers(0, 2**63 - 1, n, dtype=np.int64)


# ----------------------------------------------------------------------------------------
# Rendering (vectorised over a chunk of images)
# ----------------------------------------------------------------------------------------


def _soft(sd: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """Coverage of a shape from its signed distance (negative inside), edge ``pw`` wide."""
    return np.clip(0.5 - sd / pw, 0.0, 1.0)


def _ellipse_sd(x: np.ndarray, y: np.ndarray, a: Any, b: Any) -> np.ndarray:
    return (np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * np.minimum(a, b)


def _blend(img: np.ndarray, mask: np.ndarray, color: np.ndarray) -> None:
    """In place: ``img = img + mask * (color - img)``; color is (B, 3) or (B, H, W, 3)."""
    if color.ndim == 2:
        color = color[:, None, None, :]
    rows = np.flatnonzero(mask.any(axis=(0, 2)))  # blend only the rows the shape covers
    if len(rows) == 0:
        return
    part = img[:, rows[0] : rows[-1] + 1]
    delta = np.subtract(color, part)
    delta *= mask[:, rows[0] : rows[-1] + 1, :, None]
    part += delta


class _Frame:
    """One chunk's latents and pixel grid in face coordinates, shared by the drawing steps."""

    def __init__(self, lat: dict[str, np.ndarray], image_size: int, start: int, stop: int) -> None:
        self.p = {k: v[start:stop] for k, v in lat.items()}
        self.b, self.s = stop - start, image_size
        s = image_size
        grid = ((np.arange(s, dtype=np.float32) + 0.5) / s) * 2.0 - 1.0
        self.gx, self.gy = grid[None, None, :], grid[None, :, None]
        dx, dy = self.gx - self.col("cx"), self.gy - self.col("cy")
        cos, sin, scale = np.cos(self.col("roll")), np.sin(self.col("roll")), self.col("scale")
        self.x = (cos * dx + sin * dy) / scale  # face frame: face half-height 1, y down
        self.y = (-sin * dx + cos * dy) / scale
        self.pw = self.col("softness") * (2.0 / s) / scale  # one pixel (times focus softness) in face units
        self.xs = np.abs(self.x - self.col("shift"))  # mirrored feature coordinate (features slide with yaw)
        self.skin = self.p["skin"]
        self.contrast = self.p["contrast"][:, None]

    def col(self, name: str) -> np.ndarray:
        return self.p[name][:, None, None].astype(np.float32)

    def feature(self, darkening: Any) -> np.ndarray:
        """Feature colour: skin darkened by ``contrast * darkening`` (bias 2)."""
        return np.clip(self.skin - self.contrast * np.asarray(darkening, dtype=np.float32), 0.0, 1.0)


def _draw_head(img: np.ndarray, f: _Frame) -> np.ndarray:
    """Long hair, neck, shoulders, face, hair cap and nose; returns the visible skin's mask."""
    x, y, pw, skin, p, col = f.x, f.y, f.pw, f.skin, f.p, f.col
    face_a = col("face_a")
    # Long hair behind the head (presentation "long_hair"), then neck and shoulders.
    long_hair = col("presentation").astype(np.float32)
    back_sd = _ellipse_sd(x, y - 0.3, face_a + 0.3, 1.32)
    _blend(img, _soft(back_sd, pw) * long_hair, p["hair"])
    neck_sd = np.maximum(np.abs(x) - 0.3 * face_a / 0.78, 0.55 - y)
    _blend(img, _soft(neck_sd, pw), skin * 0.82)
    _blend(img, _soft(_ellipse_sd(x, y - 2.3, 1.5, 1.18), pw), p["shirt"])
    # Face: an ellipse whose lower half narrows (jaw taper).
    a_of_y = face_a * (1.0 - col("taper") * np.clip(y, 0.0, 1.0) ** 2)
    face_m = _soft(_ellipse_sd(x, y, a_of_y, 1.0), pw)
    _blend(img, face_m, skin)
    # Hair cap above the hairline, which curves down at the temples.
    hairline = col("hairline") + 0.35 * (x / face_a) ** 2
    cap_sd = np.maximum(_ellipse_sd(x, y + 0.06, face_a + 0.07, 1.04), y - hairline)
    cap_m = _soft(cap_sd, pw)
    _blend(img, cap_m, p["hair"])
    skin_m = face_m * (1.0 - cap_m)  # visible skin: glasses are drawn only there
    # Subtle nose shading (not a target cue).
    _blend(img, _soft(_ellipse_sd(x - col("shift"), y - 0.18, 0.05, 0.13), pw) * 0.6, skin * 0.88)
    return skin_m


def _draw_eyes(img: np.ndarray, f: _Frame) -> None:
    """Brows and eyes (narrow_eyes: the aperture), contrast-scaled like every facial feature."""
    y, xs, pw, skin, col = f.y, f.xs, f.pw, f.skin, f.col
    ex, ey, ew = col("eye_x"), col("eye_y"), col("eye_w")
    # Brows: arcs above the eyes, hair coloured, contrast-scaled like every facial feature.
    brow_y = ey - col("brow_h") - 0.05 * (1.0 - ((xs - ex) / (ew * 1.3)) ** 2)
    brow_sd = np.maximum(np.abs(y - brow_y) - col("brow_t") / 2, np.abs(xs - ex) - ew * 1.25)
    brow_col = np.clip(skin + f.contrast * 0.8 * (f.p["hair"] - skin), 0.0, 1.0)
    _blend(img, _soft(brow_sd, pw), brow_col)
    # Eyes (narrow_eyes: the aperture), a dark iris inside.
    eye_m = _soft(_ellipse_sd(xs - ex, y - ey, ew, ew * col("aperture")), pw)
    _blend(img, eye_m, f.feature(EYE_DARKENING * 0.6))
    iris_m = _soft(_ellipse_sd(xs - ex - col("gaze"), y - ey, 0.065, 0.065), pw) * eye_m
    _blend(img, iris_m, f.feature(EYE_DARKENING))


def _draw_mouth(img: np.ndarray, f: _Frame) -> None:
    """Mouth (smiling: the curvature of the line; positive = corners raised) and teeth."""
    y, pw, col = f.y, f.pw, f.col
    mw = col("mouth_w")
    xm = f.x - col("shift")
    bulge = np.clip(1.0 - (xm / mw) ** 2, 0.0, 1.0)
    half_open = col("opening") * bulge / 2  # the lower lip drops: an open smile
    mouth_mid = col("mouth_y") + col("curvature") * bulge + half_open
    mouth_sd = np.maximum(np.abs(y - mouth_mid) - col("mouth_t") / 2 - half_open, np.abs(xm) - mw)
    _blend(img, _soft(mouth_sd, pw), f.feature(MOUTH_DARKENING))
    teeth_h = TEETH_FRACTION * col("opening") * bulge
    teeth_mid = col("mouth_y") + col("curvature") * bulge + col("mouth_t") / 2 + teeth_h / 2
    teeth_sd = np.maximum(np.abs(y - teeth_mid) - teeth_h / 2, np.abs(xm) - 0.8 * mw)
    _blend(img, _soft(teeth_sd, pw), f.feature(-TEETH_LIGHTENING))


def _draw_glasses(img: np.ndarray, f: _Frame, skin_m: np.ndarray) -> None:
    """Eyeglasses: two elliptical rings, a bridge and temples, thin (about a pixel at 64 px)."""
    y, xs, col = f.y, f.xs, f.col
    glasses = col("eyeglasses").astype(np.float32)
    if glasses.any():
        ex, ey, ew = col("eye_x"), col("eye_y"), col("eye_w")
        fr, ft = ew * col("frame_r"), col("frame_t")
        fy = ey - 0.01
        ring_sd = np.abs(_ellipse_sd(xs - ex, y - fy, fr, fr * 0.72)) - ft / 2
        bar_sd = np.abs(y - fy + fr * 0.3) - ft / 2
        bridge_sd = np.maximum(bar_sd, xs - (ex - fr * 0.9))
        temple_sd = np.maximum(np.maximum(bar_sd, (ex + fr * 0.95) - xs), xs - col("face_a") * 0.92)
        frame_sd = np.minimum(ring_sd, np.minimum(bridge_sd, temple_sd))
        frame_col = np.clip(f.skin - f.contrast * f.p["frame_dark"][:, None], 0.0, 1.0)
        _blend(img, _soft(frame_sd, f.pw) * glasses * skin_m, frame_col)


def _light_and_noise(img: np.ndarray, f: _Frame) -> None:
    """Lighting: brightness and a directional gradient; then pixel noise."""
    ld = f.col("light_dir")
    light = f.col("brightness") * (1.0 + f.col("light_grad") * (np.cos(ld) * f.gx + np.sin(ld) * f.gy))
    img *= light[..., None]
    for i in np.flatnonzero(f.p["noise"] > 0):
        noise = np.random.default_rng(int(f.p["noise_seed"][i])).standard_normal((f.s, f.s, 3), dtype=np.float32)
        img[i] += f.p["noise"][i] * noise


def render(lat: dict[str, np.ndarray], image_size: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Render images ``start:stop`` of a split's latents as (B, S, S, 3) uint8."""
    stop = len(lat["skin_tone"]) if stop is None else stop
    f = _Frame(lat, image_size, start, stop)
    # Background with a vertical gradient.
    img = np.empty((f.b, f.s, f.s, 3), dtype=np.float32)
    img[:] = f.p["bg"][:, None, None, :]
    img *= (1.0 - 0.12 * f.gy)[..., None]
    skin_m = _draw_head(img, f)
    _draw_eyes(img, f)
    _draw_mouth(img, f)
    _draw_glasses(img, f, skin_m)
    _light_and_noise(img, f)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_all(lat: dict[str, np.ndarray], image_size: int, chunk: int = 256) -> np.ndarray:
    n = len(lat["skin_tone"])
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out[start:stop] = render(lat, image_size, start, stop)
    return out


def attributes_frame(lat: dict[str, np.ndarray]) -> pd.DataFrame:
    """Protected, target and auxiliary (background) labels of a split, as strings."""
    cols = {
        "skin_tone": np.array(SKIN_TONES, dtype=object)[lat["skin_tone"]],
        "presentation": np.array(PRESENTATIONS, dtype=object)[lat["presentation"]],
    }
    for name in TARGETS:
        cols[name] = np.array(CLASSES, dtype=object)[lat[name]]
    cols["background"] = np.array(BACKGROUNDS, dtype=object)[lat["background"]]
    return pd.DataFrame(cols)


def _phi(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float), b.astype(float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------------------
# The registered dataset
# ----------------------------------------------------------------------------------------


def check_request(name: str, task: Task, columns: Sequence[str], image_size: int, splits: Sequence[str], *,
                  use: str, size_hint: str = "") -> None:
    """What every synthface dataset refuses before generating anything: an unknown target, a
    protected attribute that is no column (or is the target), images too small for the cues, an
    unknown split."""
    if task.target not in TARGETS:
        raise DatasetError(f"{name} has no target {task.target!r}; choose one of {list(TARGETS)}")
    bad = [c for c in task.protected if c not in columns or c == task.target]
    if bad or not task.protected:
        raise DatasetError(f"{name}: invalid protected attribute(s) {bad or list(task.protected)} for target "
                           f"{task.target!r}; use one or more of {use}")
    if image_size < 8:
        raise DatasetError(f"{name} needs image_size >= 8 (got {image_size}){size_hint}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DatasetError(f"{name} has no split(s) {unknown}; it has {list(SPLITS)}")


@register_dataset("synthface")
class SynthFace(Dataset):
    """Synthetic faces (no files): local attribute cues, 8 skin-tone x presentation groups, tunable biases."""

    summary = "Synthetic faces (no files): local attribute cues, 8 skin-tone x presentation groups, tunable biases"
    Options = SynthFaceOptions
    default_target = "smiling"
    default_protected = ("skin_tone", "presentation")
    profile = "cpu-small"
    default_image_size = 64
    needs_root = False
    data_seed_option = "seed"  # seed N draws data N unless data.options.seed is set

    def targets(self) -> list[str]:
        return list(TARGETS)

    def sample(self, split: str, n: int, target: str) -> dict[str, np.ndarray]:
        """Labels and rendering latents of one split (no pixels)."""
        return sample_split(split, n, target, self.options)  # type: ignore[arg-type]

    def fingerprint(self, task: Task) -> dict[str, Any]:
        """No files: the generator's options, its latents and a few rendered probes, so a change to
        the generator that changes the images changes the run ids too (milliseconds)."""
        import hashlib
        import json

        options: SynthFaceOptions = self.options  # type: ignore[assignment]
        if task.target not in TARGETS:
            raise DatasetError(f"{self.registered_name} has no target {task.target!r}; choose one of {list(TARGETS)}")
        digest = hashlib.sha256(json.dumps(options.model_dump(mode="json"), sort_keys=True).encode())
        for split, n in (("train", options.n_train), ("val", options.n_val), ("test", options.n_test)):
            lat = self.sample(split, n, task.target)
            for key in sorted(lat):
                digest.update(key.encode() + np.ascontiguousarray(lat[key]).tobytes())
            digest.update(render(lat, 32, 0, 4).tobytes())
        return {"digest": digest.hexdigest()[:16], "how": "generator options, latents and 4 probe renderings per split"}

    def _build_splits(self, task: Task, image_size: int, splits: Sequence[str],
                      frame: Callable[[dict[str, np.ndarray]], pd.DataFrame],
                      labels: Callable[[dict[str, np.ndarray]], np.ndarray], protected: Sequence[str],
                      ) -> tuple[dict[str, DataSplit], dict[str, dict[str, int]], dict[str, dict[str, np.ndarray]]]:
        """The requested splits rendered (attribute ``frame`` and ``labels`` built from each split's
        latents), the group counts per split, and the latents (for a dataset's own statistics)."""
        options = self.options
        sizes = {"train": options.n_train, "val": options.n_val, "test": options.n_test}  # type: ignore[attr-defined]
        out: dict[str, DataSplit] = {}
        counts: dict[str, dict[str, int]] = {}
        lats: dict[str, dict[str, np.ndarray]] = {}
        for split in SPLITS:
            if split not in splits:
                continue  # every split has its own random stream: skipping one changes no other
            lat = lats[split] = self.sample(split, sizes[split], task.target)
            ids = np.array([f"{split}/{i:06d}" for i in range(sizes[split])], dtype=object)
            # rendered once per suite: the pixels of equal latents come from the cache (render_cache)
            pixels = render_cache.rendered(self.registered_name, split, lat, image_size, self.cache_dir, render_all,
                                           render)
            out[split] = DataSplit(split, pixels, labels(lat), frame(lat), ids)
            values, n = np.unique(out[split].group_labels(tuple(protected)), return_counts=True)
            counts[split] = {str(v): int(c) for v, c in zip(values, n)}
        return out, counts, lats

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        options: SynthFaceOptions = self.options  # type: ignore[assignment]
        columns = (*PROTECTED, *TARGETS, "background")
        check_request("synthface", task, columns, image_size, splits,
                      use=f"{list(PROTECTED)} (or another non-target column of {list(columns)})",
                      size_hint="; its cues are about a pixel at 64")
        out, counts, lats = self._build_splits(task, image_size, splits, attributes_frame,
                                               lambda lat: lat[task.target].astype(np.int64), PROTECTED)
        spurious = {split: round(_phi(lat[task.target], lat["background"]), 4) for split, lat in lats.items()}
        info = {
            "protocol": (
                "synthetic; train and val share the biased distribution (imbalanced groups, spurious "
                "background); test is balanced over skin_tone x presentation x target class, "
                "with the background family independent of the target"
            ),
            "generator": "fairbench.data.synthface",
            "options": options.model_dump(mode="json"),
            "image_size": image_size,
            "skin_tones": "I (lightest) .. IV (darkest)",
            "group_counts": counts,
            "spurious_phi": spurious,
            "auxiliary_columns": ["background"],
        }
        value_order = {"skin_tone": list(SKIN_TONES), "presentation": list(PRESENTATIONS)}
        return DatasetBundle("synthface", task, list(CLASSES), out, info, value_order=value_order)


# ----------------------------------------------------------------------------------------
# Known-answer scenarios: one bias mechanism each, with one dial
# ----------------------------------------------------------------------------------------

#: The two groups of every scenario: skin tones I and IV (indices into SKIN_TONES).
SCENARIO_TONES = (0, 3)
SCENARIO_GROUPS = tuple(SKIN_TONES[t] for t in SCENARIO_TONES)
ALIGNMENT = ("aligned", "conflicting")  # column "bias_aligned": does the background agree with the target?


class ScenarioOptions(BaseModel):
    """Sizes and seed shared by every scenario; each scenario adds its one dial."""

    model_config = ConfigDict(extra="forbid")
    #: name of the scenario's dial option (None: the scenario has none)
    dial: ClassVar[str | None] = None

    n_train: int = Field(2000, ge=16, description="number of training images")
    n_val: int = Field(1000, ge=16, description="number of validation images (same distribution as train)")
    n_test: int = Field(5000, ge=16, description="number of test images (balanced over group x target x background)")
    seed: int = Field(0, ge=0, description="seed of the data generator (same seed = identical images); in a run, train.seed unless set")


class SpuriousOptions(ScenarioOptions):
    dial: ClassVar[str | None] = "agreement"
    agreement: float = Field(
        0.95, ge=0.5, le=1.0,
        description="P(background family agrees with the target) in train and val (0.5 = no correlation)")


class UnderrepresentedOptions(ScenarioOptions):
    dial: ClassVar[str | None] = "minority_share"
    minority_share: float = Field(
        0.02, gt=0.0, le=0.5, description="share of tone IV (features drawn lighter than the skin) in train and val")


class LabelShiftOptions(ScenarioOptions):
    dial: ClassVar[str | None] = "minority_prevalence"
    minority_prevalence: float = Field(
        0.1, gt=0.0, lt=1.0, description="P(target = yes | tone IV) in train and val (tone I: 0.5)")


class LabelNoiseOptions(ScenarioOptions):
    dial: ClassVar[str | None] = "noise_rate"
    noise_rate: float = Field(
        0.2, ge=0.0, lt=0.5, description="share of tone IV labels flipped, in train, val and test (tone I: none)")


class NoBiasOptions(ScenarioOptions):
    """No dial: the oracle / sanity control."""


def sample_scenario_split(split: str, n: int, target: str, scenario: str, options: ScenarioOptions) -> dict[str, np.ndarray]:
    """Labels and latents of one split of a scenario; ``lat["label"]`` is the (possibly noisy) target label.

    Groups are tones I and IV, presentation is a fair coin; the cue contrast is the same
    (1) for both tones except under ``underrepresented``, where tone IV's features are drawn
    lighter than the skin (contrast -1: the same magnitude, the opposite sign)."""
    rng = np.random.default_rng(_split_seed(options.seed, split, target))
    dial = getattr(options, options.dial) if options.dial else None
    if split == "test":
        # Balanced over (group, target, background family): every cell n // 8 (+1 for the
        # first n % 8); the background carries no information about the target or the group.
        cells = [(g, t, w) for g in range(2) for t in range(2) for w in range(2)]
        sizes = [n // len(cells) + (i < n % len(cells)) for i in range(len(cells))]
        group, y, warm = (np.concatenate([np.full(k, c[j]) for c, k in zip(cells, sizes)]) for j in range(3))
        order = rng.permutation(n)
        group, y, warm = group[order], y[order], warm[order]
    else:
        share = dial if scenario == "underrepresented" else 0.5
        group = (rng.random(n) < share).astype(np.int64)
        prevalence = np.where(group == 1, dial, 0.5) if scenario == "label_shift" else np.full(n, 0.5)
        y = (rng.random(n) < prevalence).astype(np.int64)
        agree = rng.random(n) < (dial if scenario == "spurious" else 0.5)
        warm = np.where(agree, y, 1 - y)
    lat: dict[str, np.ndarray] = {
        "skin_tone": np.asarray(SCENARIO_TONES)[group],
        "presentation": rng.integers(0, 2, n),
        "background": warm.astype(np.int64),
    }
    contrast = np.where((group == 1) & (scenario == "underrepresented"), -1.0, 1.0)
    draw_appearance(rng, lat, y, target, SynthFaceOptions(), contrast)
    flip = np.zeros(n, dtype=bool)
    if scenario == "label_noise" and dial > 0:
        if split == "test":  # exactly round(rate * size) flips in each (tone IV, target) cell
            for cls in (0, 1):
                idx = np.flatnonzero((group == 1) & (y == cls))
                flip[rng.choice(idx, int(round(dial * len(idx))), replace=False)] = True
        else:
            flip = (group == 1) & (rng.random(n) < dial)
    lat["label"] = np.where(flip, 1 - y, y).astype(np.int64)
    lat["label_flipped"] = flip.astype(np.int64)
    return lat


def scenario_frame(lat: dict[str, np.ndarray], target: str) -> pd.DataFrame:
    """Like :func:`attributes_frame`, with the observed label as the target column and two more
    columns: ``bias_aligned`` (background family agrees with the drawn target) and ``label_flipped``."""
    frame = attributes_frame(lat)
    frame[target] = np.array(CLASSES, dtype=object)[lat["label"]]
    frame["bias_aligned"] = np.array(ALIGNMENT, dtype=object)[(lat["background"] != lat[target]).astype(int)]
    frame["label_flipped"] = np.array(["no", "yes"], dtype=object)[lat["label_flipped"]]
    return frame


class _Scenario(SynthFace):
    """A known-answer scenario: one bias mechanism of SynthFace, two groups, one dial."""

    scenario: ClassVar[str]
    mechanism: ClassVar[str]
    default_protected = ("skin_tone",)
    default_image_size = 32
    #: filled in before the profile's defaults (fairbench.config.resolve): about 35 s of one core per ERM run;
    #: ERM on spurious at agreement >= 0.9 needs ~60 epochs to converge (see the module docstring)
    run_defaults: ClassVar[dict[str, dict[str, Any]]] = {"train": {"epochs": 12}}

    def sample(self, split: str, n: int, target: str) -> dict[str, np.ndarray]:
        return sample_scenario_split(split, n, target, self.scenario, self.options)  # type: ignore[arg-type]

    def load(self, task: Task, image_size: int, splits: Sequence[str] = SPLITS) -> DatasetBundle:
        options: ScenarioOptions = self.options  # type: ignore[assignment]
        name = self.registered_name
        columns = (*PROTECTED, *TARGETS, "background", "bias_aligned", "label_flipped")
        check_request(name, task, columns, image_size, splits, use=str(list(columns)))
        out, counts, lats = self._build_splits(task, image_size, splits, lambda lat: scenario_frame(lat, task.target),
                                               lambda lat: lat["label"], task.protected)
        stats: dict[str, dict[str, float]] = {}
        for split, lat in lats.items():
            minority = lat["skin_tone"] == SCENARIO_TONES[1]
            stats[split] = {
                "share_tone_IV": round(float(minority.mean()), 4),
                "prevalence_tone_I": round(float(lat["label"][~minority].mean()), 4) if (~minority).any() else float("nan"),
                "prevalence_tone_IV": round(float(lat["label"][minority].mean()), 4) if minority.any() else float("nan"),
                "background_agreement": round(float((lat["background"] == lat[task.target]).mean()), 4),
                "labels_flipped_tone_IV": round(float(lat["label_flipped"][minority].mean()), 4) if minority.any() else float("nan"),
            }
        info = {
            "scenario": self.scenario,
            "mechanism": self.mechanism,
            "dial": {options.dial: getattr(options, options.dial)} if options.dial else {},
            "protocol": ("synthetic; train and val share the scenario's biased distribution; test is balanced "
                         "over tone (I, IV) x target x background family"),
            "generator": "fairbench.data.synthface",
            "options": options.model_dump(mode="json"),
            "image_size": image_size,
            "group_counts": counts,
            "split_statistics": stats,
            "auxiliary_columns": ["background", "bias_aligned", "label_flipped"],
        }
        value_order = {"skin_tone": list(SCENARIO_GROUPS), "presentation": list(PRESENTATIONS),
                       "bias_aligned": list(ALIGNMENT)}
        return DatasetBundle(name, task, list(CLASSES), out, info, value_order=value_order)


@register_dataset("synthface-spurious")
class SynthFaceSpurious(_Scenario):
    summary = ("Scenario: background agrees with the target in train/val (dial agreement, 0.95); "
               "groups bias_aligned; test balanced, background uninformative")
    scenario = "spurious"
    Options = SpuriousOptions
    default_protected = ("bias_aligned",)
    mechanism = ("a global cue (background family) agrees with the target in train and val with probability "
                 "`agreement`; the true cue (the mouth) is small and local; test: background independent of the target")


@register_dataset("synthface-underrepresented")
class SynthFaceUnderrepresented(_Scenario):
    summary = ("Scenario: tone IV rare in train (dial minority_share, 0.02) and drawn with lighter-than-skin "
               "features; test balanced")
    scenario = "underrepresented"
    Options = UnderrepresentedOptions
    mechanism = ("tone IV is a `minority_share` of train and val, and its facial features are drawn lighter "
                 "than the skin (tone I: darker), so what is learned on tone I transfers imperfectly")


@register_dataset("synthface-label-shift")
class SynthFaceLabelShift(_Scenario):
    summary = ("Scenario: target prevalence differs by group in train (dial minority_prevalence, 0.1 for tone IV; "
               "0.5 for tone I); test balanced")
    scenario = "label_shift"
    Options = LabelShiftOptions
    mechanism = ("P(target | tone IV) = `minority_prevalence` in train and val, 0.5 for tone I (a target-group "
                 "correlation); test: prevalence 0.5 in both groups")


@register_dataset("synthface-label-noise")
class SynthFaceLabelNoise(_Scenario):
    summary = ("Scenario (negative control): tone IV labels flipped in train, val and test (dial noise_rate, 0.2); "
               "a gap no method can close")
    scenario = "label_noise"
    Options = LabelNoiseOptions
    mechanism = ("a `noise_rate` share of tone IV labels is flipped, independently of the image, in every "
                 "split: no classifier exceeds 1 - noise_rate on tone IV's test labels")


@register_dataset("synthface-none")
class SynthFaceNoBias(_Scenario):
    summary = "Scenario (oracle control): the scenarios' images with no bias; tones I and IV balanced, no dial"
    scenario = "none"
    Options = NoBiasOptions
    mechanism = "no bias: balanced groups, prevalence 0.5, background independent of the target, clean labels"


#: scenario name -> registered dataset class
SCENARIOS: dict[str, type[_Scenario]] = {
    cls.scenario: cls
    for cls in (SynthFaceSpurious, SynthFaceUnderrepresented, SynthFaceLabelShift, SynthFaceLabelNoise, SynthFaceNoBias)
}
