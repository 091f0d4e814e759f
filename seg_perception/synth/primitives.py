"""Analytic ray intersection with the solid primitives the objects are built from.

Every primitive is a closed (or, for a mug, hollowed) solid in its own local frame.
The first surface a ray meets is the smallest positive ray parameter over all of
the solid's bounded surface patches, so each routine simply intersects every
patch and keeps the minimum; no inside/outside bookkeeping is needed, and masks
and depth are exact up to floating-point rounding.

Rays are ``o + t d``; ``o`` is ``(3,)`` (all rays from one point: the camera) or
``(N, 3)`` (shadow rays), ``d`` is ``(N, 3)``, both float64 in the primitive's local
frame and metres. ``d`` need not be unit length: camera rays use dz = 1 in the
optical frame so that ``t`` is the depth, and a rigid change of frame keeps ``t``.

``intersect`` returns ``Hit``: ``t`` (N,) with ``inf`` for a miss, the local outward
surface normal (N, 3), surface coordinates ``uv`` (N, 2) in metres for texturing,
and a small integer ``part`` naming the patch (texture selection). The renderer
uses the cheaper pair ``ray_t`` (depth only) and ``surface_at`` (attributes of the
visible pixels only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS_T = 1e-6  # metres; hits closer than this to the ray origin are ignored (self-hits)

# Primitive kinds and their parameters (metres):
#   "box":       (hx, hy, hz)                 half extents, centred at the origin
#   "frustum":   (r0, r1, h, ri, hf)          z from 0 (radius r0) to h (radius r1);
#                                            ri > 0 hollows a cylindrical cavity of
#                                            radius ri, open at the top, floor at z = hf
#   "ellipsoid": (a, b, c)                    semi-axes along x, y, z, centred
#   "ring":      (ri, ro, w)                  half annulus in the xz-plane around the
#                                            y axis, |y| <= w, only x >= 0 (a handle)
KINDS = ("box", "frustum", "ellipsoid", "ring")

# Part ids (texture selection):
BOX_FACES = {"-x": 0, "+x": 1, "-y": 2, "+y": 3, "-z": 4, "+z": 5}
PART_SIDE, PART_BOTTOM, PART_TOP, PART_INNER_WALL, PART_INNER_FLOOR, PART_CLIP = 0, 1, 2, 3, 4, 5


@dataclass
class Hit:
    t: np.ndarray
    normal: np.ndarray | None
    uv: np.ndarray | None
    part: np.ndarray | None


def local_bounds(kind: str, params: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (lo, hi) of a primitive in its local frame, metres."""
    if kind == "box":
        h = np.asarray(params[:3], dtype=np.float64)
        return -h, h
    if kind == "frustum":
        r0, r1, h = params[:3]
        r = max(r0, r1)
        return np.array([-r, -r, 0.0]), np.array([r, r, h])
    if kind == "ellipsoid":
        s = np.asarray(params[:3], dtype=np.float64)
        return -s, s
    if kind == "ring":
        _, ro, w = params
        return np.array([0.0, -w, -ro]), np.array([ro, w, ro])
    raise ValueError(f"unknown primitive kind {kind!r}")


def _keep(best: np.ndarray, cand: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mask where ``cand`` is a valid, closer hit than ``best``; updates ``best``."""
    take = valid & (cand > EPS_T) & (cand < best)
    np.copyto(best, cand, where=take)
    return take


def _quadratic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both real roots of a t^2 + b t + c = 0 (inf where none), numerically stable.

    q = -(b + sign(b) sqrt(disc)) / 2 avoids cancellation; the roots are q/a and c/q,
    and c/q is also the single root of the linear case a = 0 (a cone's generatrix).
    """
    disc = b * b - 4.0 * a * c
    bad = disc < 0.0
    sq = np.sqrt(np.maximum(disc, 0.0))
    q = -0.5 * (b + np.copysign(sq, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = q / a
        t2 = c / q
    bad1 = bad | ~np.isfinite(t1)
    bad2 = bad | ~np.isfinite(t2)
    t1[bad1] = np.inf
    t2[bad2] = np.inf
    return t1, t2


def _plane_t(o_axis: np.ndarray | float, d_axis: np.ndarray, value: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - o_axis) / d_axis
    t[~np.isfinite(t)] = np.inf
    return t


def intersect(kind: str, params: tuple[float, ...], o: np.ndarray, d: np.ndarray,
              attrs: bool = True) -> Hit:
    """First hit of rays ``o + t d`` with a primitive in its local frame (see module doc)."""
    n = d.shape[0]
    # float32 rays (the z-buffer pass) stay float32: half the memory traffic, and
    # 1e-7 relative precision is far below a pixel; float64 rays stay float64.
    dtype = np.float32 if d.dtype == np.float32 else np.float64
    o = np.asarray(o, dtype=dtype)
    # Component arrays: contiguous 1-D columns are several times faster than (N, 3) ops.
    dc = np.ascontiguousarray(d.T, dtype=dtype)
    oc = (np.ascontiguousarray(o.T) if o.ndim == 2 else o.reshape(3))
    t = ray_t(kind, params, oc, dc)
    if not attrs:
        return Hit(t, None, None, None)
    hit = np.isfinite(t)
    ob = np.broadcast_to(o, (n, 3))
    p = ob + np.where(hit, t, 0.0)[:, None] * d
    normal, uv, part = surface_at(kind, params, p, d)
    return Hit(t, normal, uv, part)


def ray_t(kind: str, params: tuple[float, ...], o, d) -> np.ndarray:
    """Ray parameter of the first hit (inf = miss), in component form.

    ``o`` and ``d`` are 3-sequences (x, y, z) of scalars or equally shaped arrays
    (any shape: the renderer passes 2D pixel blocks); the result has that shape.
    This is the fast path; ``intersect`` wraps it for (N, 3) arrays.
    """
    if kind == "box":
        return _box_t(params, o, d)
    if kind == "frustum":
        return _frustum_t(params, o, d)
    if kind == "ellipsoid":
        return _ellipsoid_t(params, o, d)
    if kind == "ring":
        return _ring_t(params, o, d)
    raise ValueError(f"unknown primitive kind {kind!r}")


def _box_t(params, o, d) -> np.ndarray:
    tnear = np.full(d[0].shape, -np.inf, dtype=d[0].dtype)
    tfar = np.full(d[0].shape, np.inf, dtype=d[0].dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):
            h = params[a]
            inv = 1.0 / d[a]
            t1 = (-h - o[a]) * inv
            t2 = (h - o[a]) * inv
            np.maximum(tnear, np.minimum(t1, t2), out=tnear)
            np.minimum(tfar, np.maximum(t1, t2), out=tfar)
    # A ray starting inside the box (a shadow ray from a point on its face) exits at tfar.
    t = np.where(tnear > EPS_T, tnear, tfar)
    t[~((tnear <= tfar) & (t > EPS_T))] = np.inf
    return t


def _frustum_t(params, o, d) -> np.ndarray:
    r0, r1, hgt, ri, hf = params
    ox, oy, oz = o[0], o[1], o[2]
    dx, dy, dz = d[0], d[1], d[2]
    k = (r1 - r0) / hgt
    best = np.full(d[0].shape, np.inf, dtype=d[0].dtype)
    # Outer side: x^2 + y^2 = (r0 + k z)^2, 0 <= z <= h.
    rz0 = r0 + k * oz
    a_xy = dx * dx + dy * dy
    b_xy = 2.0 * (ox * dx + oy * dy)
    c_xy = ox * ox + oy * oy
    a = a_xy - (k * k) * (dz * dz) if k != 0.0 else a_xy
    b = b_xy - (2.0 * k) * rz0 * dz if k != 0.0 else b_xy
    c = c_xy - rz0 * rz0
    for tr in _quadratic(a, b, c):
        z = oz + tr * dz
        _keep(best, tr, (z >= 0.0) & (z <= hgt))
    # Bottom disc z = 0 and top disc / rim annulus z = h.
    for zc, rc, top in ((0.0, r0, False), (hgt, r1, True)):
        tp = _plane_t(oz, dz, zc)
        x = ox + tp * dx
        y = oy + tp * dy
        rr = x * x + y * y
        ok = rr <= rc * rc
        if ri > 0.0 and top:
            ok &= rr >= ri * ri
        _keep(best, tp, ok)
    if ri > 0.0:
        # Cavity: inner wall (cylinder radius ri, hf <= z <= h) and its floor.
        for tr in _quadratic(a_xy, b_xy, c_xy - ri * ri):
            z = oz + tr * dz
            _keep(best, tr, (z >= hf) & (z <= hgt))
        tp = _plane_t(oz, dz, hf)
        x = ox + tp * dx
        y = oy + tp * dy
        _keep(best, tp, x * x + y * y <= ri * ri)
    return best


def _ellipsoid_t(params, o, d) -> np.ndarray:
    s0, s1, s2 = params[:3]
    ox, oy, oz = o[0] / s0, o[1] / s1, o[2] / s2
    dx, dy, dz = d[0] / s0, d[1] / s1, d[2] / s2
    a = dx * dx + dy * dy + dz * dz
    b = 2.0 * (ox * dx + oy * dy + oz * dz)
    c = ox * ox + oy * oy + oz * oz - 1.0
    t1, t2 = _quadratic(a, b, c)
    lo = np.minimum(t1, t2)
    hi = np.maximum(t1, t2)
    return np.where(lo > EPS_T, lo, np.where(hi > EPS_T, hi, np.inf))


def _ring_t(params, o, d) -> np.ndarray:
    ri, ro, w = params
    ox, oy, oz = o[0], o[1], o[2]
    dx, dy, dz = d[0], d[1], d[2]
    best = np.full(d[0].shape, np.inf, dtype=d[0].dtype)
    a = dx * dx + dz * dz
    b = 2.0 * (ox * dx + oz * dz)
    c0 = ox * ox + oz * oz
    for r in (ro, ri):
        for tr in _quadratic(a, b, c0 - r * r):
            x = ox + tr * dx
            y = oy + tr * dy
            _keep(best, tr, (np.abs(y) <= w) & (x >= 0.0))
    for yc in (-w, w):
        tp = _plane_t(oy, dy, yc)
        x = ox + tp * dx
        z = oz + tp * dz
        rr = x * x + z * z
        _keep(best, tp, (rr >= ri * ri) & (rr <= ro * ro) & (x >= 0.0))
    tp = _plane_t(ox, dx, 0.0)
    y = oy + tp * dy
    z = np.abs(oz + tp * dz)
    _keep(best, tp, (np.abs(y) <= w) & (z >= ri) & (z <= ro))
    return best


def surface_at(kind: str, params: tuple[float, ...], p: np.ndarray,
               d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward unit normal, surface coordinates and part at local hit points.

    The renderer's depth pass only needs ``t``; normals and texture coordinates are
    computed here once per *visible* pixel from the hit point ``p`` (N, 3), local.
    The camera is always outside the solids, so the outward normal is the one facing
    it (``d``, the ray direction, is accepted for interface stability). The patch a
    point lies on is the one it is closest to: exact away from edges and harmless on
    them (it only selects texture and normal).
    """
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    one = np.ones_like(x)
    zero = np.zeros_like(x)
    if kind == "box":
        hx, hy, hz = params[:3]
        ax, ay, az = np.abs(x) / hx, np.abs(y) / hy, np.abs(z) / hz
        fx = (ax >= ay) & (ax >= az)
        fy = ~fx & (ay >= az)
        fz = ~fx & ~fy
        sx, sy, sz = np.sign(x), np.sign(y), np.sign(z)
        n = np.stack([np.where(fx, sx, zero), np.where(fy, sy, zero), np.where(fz, sz, zero)], axis=1)
        # u runs to the viewer's right on every side face, so printed text is not mirrored.
        u = np.where(fx, y * sx, np.where(fy, -x * sy, x))
        v = np.where(fz, y, z)
        part = np.where(fx, 0 + (sx > 0), np.where(fy, 2 + (sy > 0), 4 + (sz > 0))).astype(np.int8)
        return n, np.stack([u, v], axis=1), part
    if kind == "frustum":
        r0, r1, hgt, ri, hf = params
        k = (r1 - r0) / hgt
        r = np.sqrt(x * x + y * y)
        rz = r0 + k * np.clip(z, 0.0, hgt)
        best = np.abs(r - rz) / np.sqrt(1.0 + k * k)
        part = np.full(len(x), PART_SIDE, dtype=np.int8)
        cands = [(np.abs(z), PART_BOTTOM), (np.abs(z - hgt), PART_TOP)]
        if ri > 0.0:
            cands += [(np.abs(r - ri) + (z < hf), PART_INNER_WALL), (np.abs(z - hf) + (r > ri), PART_INNER_FLOOR)]
        for dist, pid in cands:
            closer = dist < best
            best = np.where(closer, dist, best)
            part[closer] = pid
        side = part == PART_SIDE
        wall = part == PART_INNER_WALL
        rs = np.maximum(r, 1e-12)
        # Side: gradient of x^2 + y^2 - (r0 + k z)^2, i.e. (x, y, -k rz) scaled by 1 / r.
        sn = 1.0 / np.sqrt(1.0 + k * k)
        nx = np.where(side, x / rs * sn, np.where(wall, -x / rs, zero))
        ny = np.where(side, y / rs * sn, np.where(wall, -y / rs, zero))
        nz = np.where(side, -k * sn * one, np.where(wall, zero, np.where(part == PART_BOTTOM, -one, one)))
        curved = side | wall
        u = np.where(curved, np.arctan2(y, x) * max(r0, r1), x)
        v = np.where(curved, z, y)
        return np.stack([nx, ny, nz], axis=1), np.stack([u, v], axis=1), part
    if kind == "ellipsoid":
        a, b, c = params[:3]
        g = np.stack([x / (a * a), y / (b * b), z / (c * c)], axis=1)
        g /= np.maximum(np.sqrt((g * g).sum(axis=1, keepdims=True)), 1e-12)
        uv = np.stack([np.arctan2(y, x) * 0.5 * (a + b), z], axis=1)
        return g, uv, np.zeros(len(x), dtype=np.int8)
    if kind == "ring":
        ri, ro, w = params
        r = np.sqrt(x * x + z * z)
        best = np.abs(r - ro)
        part = np.full(len(x), PART_SIDE, dtype=np.int8)
        for dist, pid in ((np.abs(np.abs(y) - w), PART_TOP), (np.abs(r - ri), PART_INNER_WALL), (np.abs(x), PART_CLIP)):
            closer = dist < best
            best = np.where(closer, dist, best)
            part[closer] = pid
        rs = np.maximum(r, 1e-12)
        outer, inner = part == PART_SIDE, part == PART_INNER_WALL
        nx = np.where(outer, x / rs, np.where(inner, -x / rs, np.where(part == PART_CLIP, -one, zero)))
        ny = np.where(part == PART_TOP, np.sign(y), zero)
        nz = np.where(outer, z / rs, np.where(inner, -z / rs, zero))
        uv = np.stack([np.arctan2(z, x) * ro, y], axis=1)
        return np.stack([nx, ny, nz], axis=1), uv, part
    raise ValueError(f"unknown primitive kind {kind!r}")
