"""Procedural materials: colour as a function of surface coordinates.

Textures matter for the shipped model more than geometry does: a network that
only ever sees flat colours learns colour, not shape. Every surface therefore gets
some structure (noise, stripes, printed labels with text, wood grain, tiles) drawn
from a small per-scene bank of periodic tiles, sampled by nearest lookup at a
physical scale (metres per repeat) so texture density follows perspective.

Colours are specified in sRGB [0, 1] and stored linear (squared: gamma 2, which is
close to sRGB and lets the final conversion be a cheap square root).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

TILE = 128  # texels per tile side
PRINT_TILE = 256  # printed labels need finer detail: they are seen up close

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz"))


def to_linear(srgb) -> np.ndarray:
    c = np.asarray(srgb, dtype=np.float32)
    return c * c


def periodic_noise(rng: np.random.Generator, size: int = TILE, beta: float = 2.0,
                   stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A seamless (size, size) float32 noise tile in [0, 1] with a 1/f^beta spectrum.

    ``stretch`` (rows, cols) > 1 shortens the correlation along that axis: (8, 1)
    gives grain that runs along the columns, as wood does.
    """
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None] * stretch[0]
    fx = np.fft.fftfreq(size)[None, :] * stretch[1]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = np.fft.fft2(white) * f ** (-beta / 2.0)
    spec[0, 0] = 0.0
    n = np.real(np.fft.ifft2(spec))
    n -= n.min()
    n /= max(float(n.max()), 1e-9)
    return n.astype(np.float32)


def random_srgb(rng: np.random.Generator, sat: tuple[float, float] = (0.3, 1.0),
                val: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
    """A random sRGB colour drawn in HSV so saturation and brightness stay in range."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]],
                   dtype=np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return rgb.astype(np.float32) / 255.0


def print_tile(rng: np.random.Generator, size: int = PRINT_TILE) -> np.ndarray:
    """A (size, size, 3) linear-RGB 'printed packaging' tile: colour blocks, a logo disc
    and lines of random text, so labels carry edges and letters like real products."""
    bg = random_srgb(rng, val=(0.4, 1.0))
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = (bg * 255).astype(np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = tuple(int(v) for v in (random_srgb(rng) * 255))
        y0 = int(rng.integers(0, size))
        h = int(rng.integers(size // 12, size // 3))
        if rng.random() < 0.7:
            cv2.rectangle(img, (0, y0), (size - 1, min(size - 1, y0 + h)), c, -1)
        else:
            x0 = int(rng.integers(0, size))
            cv2.rectangle(img, (x0, y0), (min(size - 1, x0 + h), min(size - 1, y0 + h)), c, -1)
    if rng.random() < 0.6:
        c = tuple(int(v) for v in (random_srgb(rng) * 255))
        cv2.circle(img, (int(rng.integers(0, size)), int(rng.integers(0, size))),
                   int(rng.integers(size // 10, size // 4)), c, -1, cv2.LINE_AA)
    for _ in range(rng.integers(1, 5)):
        word = "".join(rng.choice(_LETTERS, size=int(rng.integers(3, 9))))
        dark = rng.random() < 0.6
        c = (20, 20, 20) if dark else tuple(int(v) for v in (random_srgb(rng) * 255))
        k = size / 128.0
        cv2.putText(img, word, (int(rng.integers(-10, size // 2)), int(rng.integers(int(12 * k), size))),
                    _FONTS[int(rng.integers(len(_FONTS)))], float(rng.uniform(0.4, 1.3)) * k, c,
                    int(rng.integers(1, 3) * k), cv2.LINE_AA)
    return to_linear(img.astype(np.float32) / 255.0)


@dataclass
class TextureBank:
    """Per-scene tiles shared by all materials of that scene."""

    noise: list[np.ndarray]
    grain: list[np.ndarray]
    prints: list[np.ndarray]

    @staticmethod
    def generate(rng: np.random.Generator, n_noise: int = 3, n_grain: int = 2,
                 n_prints: int = 6) -> "TextureBank":
        noise = [periodic_noise(rng, beta=float(rng.uniform(1.5, 2.8))) for _ in range(n_noise)]
        grain = [periodic_noise(rng, beta=2.2, stretch=(1.0, float(rng.uniform(6, 14))))
                 for _ in range(n_grain)]
        prints = [print_tile(rng) for _ in range(n_prints)]
        return TextureBank(noise, grain, prints)


_BANK_POOL_SIZE = 48
_bank_pool: dict[int, TextureBank] = {}


def pooled_bank(index: int) -> TextureBank:
    """One of a fixed pool of texture banks, built on first use from its index alone.

    Building a bank (FFT noise, text rendering) costs several milliseconds; scenes
    draw one from this pool instead, which keeps generation fast and deterministic
    (a bank depends only on its index, never on what was generated before).
    """
    index = int(index) % _BANK_POOL_SIZE
    bank = _bank_pool.get(index)
    if bank is None:
        bank = TextureBank.generate(np.random.default_rng([0x7E57, index]))
        _bank_pool[index] = bank
    return bank


def _lookup(tile: np.ndarray, u: np.ndarray, v: np.ndarray, su: float, sv: float) -> np.ndarray:
    """Nearest-texel lookup with wrap-around; ``su``/``sv`` are metres per tile repeat.
    Row 0 of the tile is its top, so v (up) is negated to keep printed text upright.
    Tiles are square with a power-of-two side, so wrapping is a bit mask."""
    h, w = tile.shape[:2]
    iu = (u * np.float32(w / su)).astype(np.int32)  # truncation; the floor's -1 offset is irrelevant
    iv = (v * np.float32(-h / sv)).astype(np.int32)
    flat = (iv & (h - 1)) * w + (iu & (w - 1))
    return tile.reshape(h * w, -1)[flat] if tile.ndim == 3 else tile.reshape(-1)[flat]


def _hash01(i: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer (plank/tile shade)."""
    x = i.astype(np.int64).astype(np.uint32) * np.uint32(2654435761)  # Knuth's multiplicative hash
    x ^= x >> np.uint32(15)
    x *= np.uint32(2246822519)
    x ^= x >> np.uint32(13)
    return (x >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


@dataclass
class Material:
    """How a surface looks. ``kind`` selects the pattern (see ``albedo``).

    color, color2: linear RGB; scale: metres per pattern repeat; tile: index into the
    bank list the kind uses; amount: strength of the fine noise that keeps surfaces
    from looking flat; spec/shininess: Blinn-Phong highlight; band: (v0, v1) metres
    of a label band (kind "label"); parts: per-part overrides (e.g. a can's lids).
    """

    kind: str = "plain"
    color: np.ndarray = field(default_factory=lambda: np.full(3, 0.5, np.float32))
    color2: np.ndarray = field(default_factory=lambda: np.full(3, 0.2, np.float32))
    scale: float = 0.05
    tile: int = 0
    amount: float = 0.15
    spec: float = 0.0
    shininess: float = 20.0
    band: tuple[float, float] = (0.0, 0.0)
    axis: int = 0
    offset: tuple[float, float] = (0.0, 0.0)
    parts: dict[int, "Material"] = field(default_factory=dict)

    def evaluate(self, uv: np.ndarray, part: np.ndarray,
                 bank: TextureBank) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear albedo (N, 3), specular strength (N,) and shininess (N,), float32,
        for surface coordinates ``uv`` (N, 2) metres on patches ``part`` (N,)."""
        out = self._own(uv, bank).astype(np.float32, copy=False)
        spec = np.full(len(uv), self.spec, dtype=np.float32)
        shin = np.full(len(uv), self.shininess, dtype=np.float32)
        for pid, mat in self.parts.items():
            sel = part == pid
            if sel.any():
                out[sel] = mat._own(uv[sel], bank)
                spec[sel] = mat.spec
                shin[sel] = mat.shininess
        return out, spec, shin

    def _own(self, uv: np.ndarray, bank: TextureBank) -> np.ndarray:
        u = uv[:, 0] + self.offset[0]
        v = uv[:, 1] + self.offset[1]
        fine = _lookup(bank.noise[self.tile % len(bank.noise)], u, v, self.scale, self.scale)
        mod = (1.0 + self.amount * (fine - 0.5))[:, None]
        k = self.kind
        if k == "plain":
            return self.color[None, :] * mod
        if k == "noise":
            n = _lookup(bank.noise[(self.tile + 1) % len(bank.noise)], u, v, self.scale * 4, self.scale * 4)
            return (self.color[None, :] * (1 - n[:, None]) + self.color2[None, :] * n[:, None]) * mod
        if k == "stripes":
            coord = u if self.axis == 0 else v
            sel = (np.floor(coord / self.scale) % 2).astype(bool)[:, None]
            return np.where(sel, self.color2[None, :], self.color[None, :]) * mod
        if k == "checker":
            sel = ((np.floor(u / self.scale) + np.floor(v / self.scale)) % 2).astype(bool)[:, None]
            return np.where(sel, self.color2[None, :], self.color[None, :]) * mod
        if k == "print":
            tile = bank.prints[self.tile % len(bank.prints)]
            return _lookup(tile, u, v, self.scale, self.scale) * mod
        if k == "label":
            tile = bank.prints[self.tile % len(bank.prints)]
            v0, v1 = self.band
            inside = ((v >= v0) & (v <= v1))[:, None]
            lab = _lookup(tile, u, v - v1, self.scale, max(v1 - v0, 1e-3))
            return np.where(inside, lab, self.color[None, :] * mod)
        if k == "segments":
            # Beach-ball style sectors in the azimuth coordinate u = angle * radius.
            sel = (np.floor(u / self.scale) % 2).astype(bool)[:, None]
            return np.where(sel, self.color2[None, :], self.color[None, :]) * mod
        if k == "wood":
            g = _lookup(bank.grain[self.tile % len(bank.grain)], u if self.axis == 0 else v,
                        v if self.axis == 0 else u, self.scale * 6, self.scale)
            g = g[:, None] ** 1.5
            return (self.color[None, :] * (1 - g) + self.color2[None, :] * g) * mod
        if k == "planks":
            # Floorboards of width ``scale`` along v, staggered joints every 1.2 m along u.
            row = np.floor(v / self.scale)
            along = (u + _hash01(row) * 1.2) / 1.2
            col = np.floor(along)
            shade = (0.75 + 0.5 * _hash01(row * 31.0 + col))[:, None]
            g = _lookup(bank.grain[self.tile % len(bank.grain)], u + row * 0.37, v,
                        self.scale * 8, self.scale)[:, None] ** 1.5
            seam = ((v / self.scale - row) < 0.04) | ((along - col) < 0.004)
            c = (self.color[None, :] * (1 - g) + self.color2[None, :] * g) * shade * mod
            return np.where(seam[:, None], c * 0.35, c)
        if k == "tiles":
            fu = u / self.scale - np.floor(u / self.scale)
            fv = v / self.scale - np.floor(v / self.scale)
            grout = (fu < 0.03) | (fv < 0.03)
            shade = (0.9 + 0.2 * _hash01(np.floor(u / self.scale) * 17 + np.floor(v / self.scale)))[:, None]
            return np.where(grout[:, None], self.color2[None, :], self.color[None, :] * shade) * mod
        raise ValueError(f"unknown material kind {k!r}")
