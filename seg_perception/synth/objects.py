"""Randomised object models built from primitives, with their grasp keypoints.

Each builder returns a ``SceneObject`` in its own *object frame*: z up, metres, the
support surface at z = 0 and the object's footprint centred on the origin, so a
scene places it with a yaw and a translation on a table or the floor. Sizes are
those of real household objects (a can is 6-16 cm tall, a ball 6-24 cm across).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_perception.synth.classes import CLASS_KEYPOINTS, INTERIOR_KEYPOINTS, KEYPOINT_NAMES
from seg_perception.synth.geometry import rot_axis, rot_x, rot_y, rot_z
from seg_perception.synth.primitives import (BOX_FACES, PART_BOTTOM, PART_INNER_FLOOR,
                                              PART_INNER_WALL, PART_TOP, local_bounds)
from seg_perception.synth.textures import Material, TextureBank, random_srgb, to_linear

_I3 = np.eye(3)


@dataclass
class Part:
    """One primitive of an object: local frame -> object frame is ``x_obj = R x + t``."""

    kind: str
    params: tuple[float, ...]
    material: Material
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        # Plain floats: NumPy scalars would silently promote float32 ray maths to float64.
        self.params = tuple(float(v) for v in self.params)


@dataclass
class SceneObject:
    """A rigid object: parts and keypoints in the object frame, pose in the world.

    class_name None marks background geometry (the table, distractors): it occludes
    and casts shadows but is never annotated. ``keypoints`` (k, 3) are object-frame
    points for the flat keypoint indices ``kp_index``; ``kp_interior`` marks points
    inside the solid (a ball's centre), which count as visible when the object itself
    is what the camera sees there. ``radius`` is the footprint radius (metres) used to
    keep objects apart on the support surface.
    """

    class_name: str | None
    parts: list[Part]
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kp_index: list[int] = field(default_factory=list)
    kp_interior: list[bool] = field(default_factory=list)
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 0.0
    track_id: int = 0
    casts_shadow: bool = True
    _bounds: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def transform_local(self, R: np.ndarray, t: np.ndarray) -> None:
        """Re-express the object in a new object frame: x_new = R x_old + t."""
        self._bounds = None
        for p in self.parts:
            p.R = R @ p.R
            p.t = R @ p.t + t
        if len(self.keypoints):
            self.keypoints = self.keypoints @ R.T + t

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (lo, hi) of the object in its own frame, metres.

        Cached: parts only change through ``transform_local`` (which resets the
        cache) or by spinning a sphere about its centre (which keeps its box)."""
        cached = self._bounds
        if cached is None:
            cached = self._bounds = self._compute_bounds()
        return cached

    def _compute_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        pts = []
        for p in self.parts:
            if p.kind == "ellipsoid":  # exact: a spinning ball keeps its box
                half = np.sqrt(((p.R * np.asarray(p.params)) ** 2).sum(axis=1))
                pts.append(np.stack([p.t - half, p.t + half]))
                continue
            if p.kind == "frustum":  # exact: the union of the two end discs' boxes
                axis = p.R[:, 2]
                spread = np.sqrt(np.clip(1.0 - axis ** 2, 0.0, 1.0))
                for zc, rc in ((0.0, p.params[0]), (p.params[2], p.params[1])):
                    c = p.t + axis * zc
                    pts.append(np.stack([c - rc * spread, c + rc * spread]))
                continue
            lo, hi = local_bounds(p.kind, p.params)
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            pts.append(corners @ p.R.T + p.t)
        allp = np.concatenate(pts)
        return allp.min(axis=0), allp.max(axis=0)

    def footprint_radius(self) -> float:
        lo, hi = self.bounds()
        return float(np.max(np.hypot([lo[0], hi[0], lo[0], hi[0]], [lo[1], lo[1], hi[1], hi[1]])))


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _plastic(rng: np.random.Generator, bank: TextureBank, spec: float = 0.35) -> Material:
    """A coloured surface with one of the common patterns of plastic/ceramic goods."""
    c = to_linear(random_srgb(rng))
    c2 = to_linear(random_srgb(rng))
    r = rng.random()
    if r < 0.55:
        return Material("plain", c, c2, scale=0.03, tile=int(rng.integers(3)), amount=0.12, spec=spec,
                        shininess=_u(rng, 15, 60))
    if r < 0.8:
        return Material("stripes", c, c2, scale=_u(rng, 0.008, 0.03), axis=int(rng.integers(2)),
                        tile=int(rng.integers(3)), amount=0.1, spec=spec, shininess=_u(rng, 15, 60))
    return Material("print", c, c2, scale=_u(rng, 0.06, 0.15), tile=int(rng.integers(len(bank.prints))),
                    amount=0.08, spec=spec * 0.7, shininess=30)


def _metal(rng: np.random.Generator) -> Material:
    g = _u(rng, 0.45, 0.8)
    tint = np.array([g, g, g * _u(rng, 0.92, 1.05)])
    return Material("plain", to_linear(tint), to_linear(tint), scale=0.02, amount=0.08, spec=0.9,
                    shininess=_u(rng, 40, 90))


def _lay_down(obj: SceneObject, length: float, radius: float) -> None:
    """Tip an upright object of axis length ``length`` onto its side (axis horizontal),
    resting on its widest radius, with the footprint re-centred on the origin."""
    obj.transform_local(rot_x(np.pi / 2), np.array([0.0, length / 2.0, radius]))


def build_box(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    sx, sy, sz = _u(rng, 0.05, 0.28), _u(rng, 0.05, 0.22), _u(rng, 0.03, 0.24)
    style = rng.random()
    if style < 0.35:  # cardboard, sometimes with packing tape along the top
        brown = to_linear(np.array([0.62, 0.45, 0.28]) * _u(rng, 0.8, 1.15))
        mat = Material("noise", brown, brown * 0.75, scale=0.02, tile=int(rng.integers(3)), amount=0.2,
                       spec=0.05)
        if rng.random() < 0.5:
            tape = Material("stripes", brown, to_linear(np.array([0.75, 0.65, 0.5])), scale=0.025,
                            axis=0, amount=0.1, spec=0.3, offset=(0.0125, 0.0))
            mat.parts[BOX_FACES["+z"]] = tape
    elif style < 0.8:  # printed product packaging
        mat = Material("print", scale=max(sx, sy, sz) * _u(rng, 0.9, 1.4), tile=int(rng.integers(len(bank.prints))),
                       amount=0.06, spec=0.15, offset=(_u(rng, 0, 1), _u(rng, 0, 1)))
    else:  # toy block / plastic storage box
        mat = _plastic(rng, bank, spec=0.3)
    obj = SceneObject("box", [Part("box", (sx / 2, sy / 2, sz / 2), mat, t=np.array([0.0, 0.0, sz / 2]))])
    obj.keypoints = np.array([[-sx / 2, -sy / 2, sz], [sx / 2, -sy / 2, sz], [sx / 2, sy / 2, sz], [-sx / 2, sy / 2, sz]])
    obj.kp_index = list(CLASS_KEYPOINTS["box"])
    obj.kp_interior = [False] * 4
    return obj


def build_bottle(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    rb, hb = _u(rng, 0.028, 0.045), _u(rng, 0.11, 0.22)
    hs, rn = _u(rng, 0.02, 0.05), _u(rng, 0.011, 0.017)
    hn, hc = _u(rng, 0.015, 0.04), _u(rng, 0.01, 0.022)
    rc = rn + _u(rng, 0.001, 0.004)
    plastic = to_linear(random_srgb(rng, sat=(0.2, 0.9), val=(0.3, 0.9)))
    body_mat = Material("plain", plastic, plastic, scale=0.03, amount=0.08, spec=0.7, shininess=_u(rng, 40, 90))
    if rng.random() < 0.75:
        body_mat = Material("label", plastic, plastic, scale=2 * np.pi * rb * _u(rng, 0.5, 1.0),
                            tile=int(rng.integers(len(bank.prints))), amount=0.08, spec=0.6,
                            shininess=60, band=(hb * _u(rng, 0.1, 0.35), hb * _u(rng, 0.6, 0.9)))
    body_mat.parts[PART_TOP] = Material("plain", plastic, plastic, amount=0.05, spec=0.6, shininess=60)
    neck_mat = Material("plain", plastic, plastic, scale=0.03, amount=0.08, spec=0.7, shininess=60)
    cap_c = to_linear(random_srgb(rng))
    cap_mat = Material("stripes" if rng.random() < 0.4 else "plain", cap_c, cap_c * 0.7, scale=0.003, axis=0,
                       amount=0.1, spec=0.3)
    z1, z2, z3 = hb, hb + hs, hb + hs + hn
    obj = SceneObject("bottle", [
        Part("frustum", (rb, rb, hb, 0.0, 0.0), body_mat),
        Part("frustum", (rb, rn, hs, 0.0, 0.0), neck_mat, t=np.array([0.0, 0.0, z1])),
        Part("frustum", (rn, rn, hn, 0.0, 0.0), neck_mat, t=np.array([0.0, 0.0, z2])),
        Part("frustum", (rc, rc, hc, 0.0, 0.0), cap_mat, t=np.array([0.0, 0.0, z3])),
    ])
    obj.keypoints = np.array([[0.0, 0.0, z3 + hc], [0.0, 0.0, z2 + hn / 2], [0.0, 0.0, 0.0]])
    obj.kp_index = list(CLASS_KEYPOINTS["bottle"])
    obj.kp_interior = [False, True, False]
    if rng.random() < 0.25:
        _lay_down(obj, z3 + hc, rb)
    return obj


def build_can(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    r, h = _u(rng, 0.03, 0.05), _u(rng, 0.06, 0.16)
    rim = min(0.006, h * 0.08)
    lid = _metal(rng)
    if rng.random() < 0.8:
        body = Material("label", to_linear(random_srgb(rng)), scale=2 * np.pi * r * _u(rng, 0.5, 1.0),
                        tile=int(rng.integers(len(bank.prints))), amount=0.06, spec=0.5, shininess=50,
                        band=(0.0 if rng.random() < 0.5 else rim, h - rim))
    else:
        body = _plastic(rng, bank, spec=0.6)
    body.parts[PART_TOP] = lid
    body.parts[PART_BOTTOM] = lid
    obj = SceneObject("can", [
        Part("frustum", (r, r, h - rim, 0.0, 0.0), body),
        Part("frustum", (r, r * 0.9, rim, 0.0, 0.0), lid, t=np.array([0.0, 0.0, h - rim])),
    ])
    obj.keypoints = np.array([[0.0, 0.0, h], [0.0, 0.0, 0.0]])
    obj.kp_index = list(CLASS_KEYPOINTS["can"])
    obj.kp_interior = [False, False]
    if rng.random() < 0.2:
        _lay_down(obj, h, r)
    return obj


def build_mug(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    R, H = _u(rng, 0.035, 0.05), _u(rng, 0.075, 0.11)
    wall, floor = _u(rng, 0.004, 0.007), _u(rng, 0.006, 0.012)
    rbot = R * _u(rng, 0.85, 1.0)
    mat = _plastic(rng, bank, spec=0.45)
    inner = Material("plain", mat.color * 0.8, mat.color, amount=0.05, spec=0.3)
    mat.parts[PART_INNER_WALL] = inner
    mat.parts[PART_INNER_FLOOR] = (Material("plain", to_linear(np.array([0.25, 0.14, 0.07])), amount=0.05, spec=0.6)
                                   if rng.random() < 0.3 else inner)
    mat.parts[PART_TOP] = Material("plain", mat.color, amount=0.05, spec=0.4)
    zc = H * _u(rng, 0.45, 0.58)
    ro = min(H * _u(rng, 0.3, 0.4), zc - 0.006, H - zc - 0.006)
    ri = ro - _u(rng, 0.007, 0.011)
    w = _u(rng, 0.005, 0.009)
    # The clipped half-ring's ends must sit inside the (tapered) wall at both attachment
    # heights, or a gap would show between handle and body: use the narrower, lower one.
    xc = rbot + (R - rbot) * (zc - ro) / H - 0.002
    obj = SceneObject("mug", [
        # The cavity is a cylinder: the wall is thinnest at the narrower (bottom) end.
        Part("frustum", (rbot, R, H, rbot - wall, floor), mat),
        Part("ring", (ri, ro, w), Material("plain", mat.color, amount=0.1, spec=0.45, shininess=mat.shininess),
             t=np.array([xc, 0.0, zc])),
    ])
    obj.keypoints = np.array([[0.0, 0.0, H], [0.0, 0.0, 0.0], [xc + ro, 0.0, zc]])
    obj.kp_index = list(CLASS_KEYPOINTS["mug"])
    obj.kp_interior = [False, False, False]
    return obj


def build_ball(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    r = _u(rng, 0.03, 0.12)
    c1, c2 = to_linear(random_srgb(rng)), to_linear(random_srgb(rng))
    kind = rng.random()
    if kind < 0.3:
        mat = Material("segments", c1, c2, scale=2 * np.pi * r / (2 * int(rng.integers(2, 5))), amount=0.06,
                       spec=0.5, shininess=40)
    elif kind < 0.5:
        felt = to_linear(np.array([0.8, 0.9, 0.25]))
        mat = Material("noise", felt, felt * 0.7, scale=0.005, amount=0.3, spec=0.05)
    elif kind < 0.65:
        mat = Material("stripes", c1, c2, scale=r * _u(rng, 0.3, 0.7), axis=1, amount=0.08, spec=0.4)
    else:
        mat = Material("plain", c1, c2, scale=0.02, amount=0.15, spec=_u(rng, 0.05, 0.6), shininess=30)
    spin = rot_axis(rng.standard_normal(3), _u(rng, 0, np.pi))
    obj = SceneObject("ball", [Part("ellipsoid", (r, r, r), mat, R=spin, t=np.array([0.0, 0.0, r]))])
    obj.keypoints = np.array([[0.0, 0.0, r]])
    obj.kp_index = list(CLASS_KEYPOINTS["ball"])
    obj.kp_interior = [True]
    return obj


def build_tool(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    """A screwdriver or a spatula lying on its side, tilted so the tip touches the surface."""
    along = rot_y(np.pi / 2)  # a frustum's axis (local z) along the tool axis (object x)
    rh, lh = _u(rng, 0.010, 0.017), _u(rng, 0.07, 0.12)
    handle_mat = _plastic(rng, bank, spec=0.4)
    if handle_mat.kind == "print":
        handle_mat.kind = "stripes"
        handle_mat.scale = 0.01
    parts = [
        Part("frustum", (rh * 0.85, rh, lh * 0.15, 0.0, 0.0), handle_mat, R=along),
        Part("frustum", (rh, rh * 0.9, lh * 0.85, 0.0, 0.0), handle_mat, R=along, t=np.array([lh * 0.15, 0.0, 0.0])),
    ]
    if rng.random() < 0.6:  # screwdriver
        rs, ls = _u(rng, 0.0025, 0.0045), _u(rng, 0.06, 0.15)
        tip_len = 0.01
        metal = _metal(rng)
        parts += [Part("frustum", (rs, rs, ls, 0.0, 0.0), metal, R=along, t=np.array([lh, 0.0, 0.0])),
                  Part("frustum", (rs, rs * 0.35, tip_len, 0.0, 0.0), metal, R=along,
                       t=np.array([lh + ls, 0.0, 0.0]))]
        length = lh + ls + tip_len
        r_tip = rs * 0.35
    else:  # spatula / turner: a flat neck and a wide thin blade
        ln, lb = _u(rng, 0.03, 0.06), _u(rng, 0.05, 0.09)
        wb, tb = _u(rng, 0.04, 0.07), 0.0015
        blade = _metal(rng) if rng.random() < 0.5 else _plastic(rng, bank, spec=0.3)
        parts += [Part("box", (ln / 2, 0.006, tb * 1.5), blade, t=np.array([lh + ln / 2, 0.0, 0.0])),
                  Part("box", (lb / 2, wb / 2, tb), blade, t=np.array([lh + ln + lb / 2, 0.0, 0.0]))]
        length = lh + ln + lb
        r_tip = tb
    obj = SceneObject("tool", parts)
    obj.keypoints = np.array([[length, 0.0, 0.0], [0.0, 0.0, 0.0]])
    obj.kp_index = list(CLASS_KEYPOINTS["tool"])
    obj.kp_interior = [False, False]
    # Pivot on the front of the handle and lower the shaft until its tip rests.
    theta = float(np.arcsin(np.clip((rh - r_tip) / (length - lh), 0.0, 0.5)))
    R = rot_y(theta)
    pivot = np.array([lh, 0.0, 0.0])
    obj.transform_local(R, -R @ pivot + pivot + np.array([-length / 2, 0.0, rh]))
    return obj


def build_banana(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    """A curved chain of overlapping ellipsoids lying on its side, with a stem."""
    rarc, arc = _u(rng, 0.10, 0.18), np.radians(_u(rng, 50, 90))
    bend = 1.0 if rng.random() < 0.5 else -1.0  # which way the banana curves
    n, rmax = 11, _u(rng, 0.015, 0.021)
    seg = rarc * arc / n
    yellow = to_linear(np.array([0.95, 0.83, 0.22]) if rng.random() > 0.25 else np.array([0.75, 0.82, 0.25]))
    spots = to_linear(np.array([0.45, 0.32, 0.12]))
    skin = Material("noise", yellow, yellow * 0.6 + spots * 0.4, scale=0.004, tile=int(rng.integers(3)),
                    amount=0.25, spec=0.25, shininess=20)
    ends = Material("plain", spots, spots, amount=0.2, spec=0.1)
    parts, centres, tangents, half = [], [], [], []
    for i in range(n):
        s = (i + 0.5) / n
        phi = -arc / 2 + arc * s
        r = rmax * (0.3 + 0.7 * np.sin(np.pi * s) ** 0.5)
        c = np.array([rarc * np.sin(phi), bend * rarc * (1 - np.cos(phi)), r * 0.9])
        # Long overlapping segments so the chain reads as one smooth body.
        a = 1.6 * seg if 0 < i < n - 1 else 1.2 * seg
        parts.append(Part("ellipsoid", (a, r, r * 0.9), ends if i == n - 1 else skin, R=rot_z(bend * phi), t=c))
        centres.append(c)
        tangents.append(np.array([np.cos(phi), bend * np.sin(phi), 0.0]))
        half.append(a)
    # Stem: a short dark cylinder leaving the first segment backwards along the curve.
    stem_len = _u(rng, 0.015, 0.03)
    stem_dir = -tangents[0]
    start = centres[0] + stem_dir * (half[0] * 0.8)
    parts.append(Part("frustum", (0.005, 0.004, stem_len, 0.0, 0.0),
                      Material("plain", to_linear(np.array([0.35, 0.3, 0.12])), amount=0.2, spec=0.1),
                      R=_frame_with_z(stem_dir), t=start))
    obj = SceneObject("banana", parts)
    obj.keypoints = np.array([start + stem_dir * stem_len, centres[-1] + tangents[-1] * half[-1]])
    obj.kp_index = list(CLASS_KEYPOINTS["banana"])
    obj.kp_interior = [False, False]
    mid = np.mean(np.array(centres), axis=0)
    obj.transform_local(np.eye(3), np.array([-mid[0], -mid[1], 0.0]))
    return obj


def _frame_with_z(z: np.ndarray) -> np.ndarray:
    """A right-handed rotation whose third column is the unit vector ``z``."""
    z = z / np.linalg.norm(z)
    x = np.cross([0.0, 0.0, 1.0], z) if abs(z[2]) < 0.9 else np.cross([1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def build_plate(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    """Distractor: a plate (not a target class, so never annotated)."""
    r = _u(rng, 0.08, 0.13)
    white = to_linear(np.array([0.92, 0.92, 0.9]) * _u(rng, 0.8, 1.0))
    mat = Material("plain", white, amount=0.05, spec=0.5, shininess=50)
    if rng.random() < 0.4:
        mat = Material("stripes", white, to_linear(random_srgb(rng)), scale=0.01, axis=1, amount=0.05, spec=0.5)
    return SceneObject(None, [Part("frustum", (r * 0.7, r, _u(rng, 0.012, 0.02), 0.0, 0.0), mat)])


def build_paper(rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    """Distractor: a sheet of paper or a magazine lying flat."""
    sx, sy = _u(rng, 0.1, 0.22), _u(rng, 0.14, 0.3)
    th = _u(rng, 0.0005, 0.004)
    if rng.random() < 0.5:
        mat = Material("print", scale=max(sx, sy), tile=int(rng.integers(len(bank.prints))), amount=0.05)
    else:
        mat = Material("stripes", to_linear(np.array([0.93, 0.93, 0.9])), to_linear(np.array([0.55, 0.55, 0.6])),
                       scale=0.006, axis=1, amount=0.05)
    return SceneObject(None, [Part("box", (sx / 2, sy / 2, th / 2), mat, t=np.array([0.0, 0.0, th / 2]))],
                       casts_shadow=False)


BUILDERS = {
    "box": build_box,
    "bottle": build_bottle,
    "can": build_can,
    "mug": build_mug,
    "ball": build_ball,
    "tool": build_tool,
    "banana": build_banana,
}
DISTRACTORS = {"plate": build_plate, "paper": build_paper}


def build_object(class_name: str, rng: np.random.Generator, bank: TextureBank) -> SceneObject:
    """A random instance of ``class_name`` in its object frame, radius filled in."""
    obj = BUILDERS[class_name](rng, bank)
    obj.radius = obj.footprint_radius()
    assert obj.kp_interior == [KEYPOINT_NAMES[k] in INTERIOR_KEYPOINTS for k in obj.kp_index]
    return obj
