"""Ray casting against each primitive finds the first surface of the solid."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.synth.primitives import intersect, local_bounds, ray_t, surface_at

PRIMS = [
    ("box", (0.1, 0.05, 0.2)),
    ("frustum", (0.05, 0.05, 0.12, 0.0, 0.0)),          # cylinder
    ("frustum", (0.06, 0.02, 0.08, 0.0, 0.0)),          # cone frustum (bottle shoulder)
    ("frustum", (0.045, 0.05, 0.10, 0.04, 0.01)),       # hollow mug body
    ("ellipsoid", (0.08, 0.05, 0.03)),
    ("ring", (0.02, 0.03, 0.006)),                      # mug handle
]


def _inside(kind, params, p):
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    if kind == "box":
        return np.all(np.abs(p) <= np.asarray(params), axis=-1)
    if kind == "frustum":
        r0, r1, h, ri, hf = params
        r = np.hypot(x, y)
        solid = (z >= 0) & (z <= h) & (r <= r0 + (r1 - r0) / h * z)
        return solid & ~((ri > 0) & (z >= hf) & (r < ri))
    if kind == "ellipsoid":
        return ((p / np.asarray(params)) ** 2).sum(axis=-1) <= 1
    ri, ro, w = params
    r = np.hypot(x, z)
    return (np.abs(y) <= w) & (x >= 0) & (r >= ri) & (r <= ro)


def _rays(rng, n=4000):
    # Origins on a sphere of radius 0.6 m, aimed at random points near the primitive.
    o = rng.normal(size=(n, 3))
    o *= 0.6 / np.linalg.norm(o, axis=1, keepdims=True)
    target = rng.uniform(-0.12, 0.15, size=(n, 3))
    d = target - o
    return o, d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("kind,params", PRIMS)
def test_first_hit_is_the_entry_into_the_solid(kind, params):
    rng = np.random.default_rng(0)
    o, d = _rays(rng)
    t = intersect(kind, params, o, d, attrs=False).t
    hit = np.isfinite(t)
    assert 50 < hit.sum() < len(t)
    # Just past the hit the ray is inside (except rays grazing an edge) ...
    after = o[hit] + (t[hit] + 2e-4)[:, None] * d[hit]
    assert np.mean(_inside(kind, params, after)) > 0.97
    # ... and nowhere before it.
    steps = np.linspace(0.0, 1.0, 400, endpoint=False)[None, :, None]
    before = o[hit][:, None, :] + steps * (t[hit][:, None, None] - 1e-5) * d[hit][:, None, :]
    assert not np.any(_inside(kind, params, before))
    # Misses never pass through the solid.
    miss_pts = o[~hit][:, None, :] + np.linspace(0, 1.2, 600)[None, :, None] * d[~hit][:, None, :]
    assert np.mean(np.any(_inside(kind, params, miss_pts), axis=1)) < 0.002


@pytest.mark.parametrize("kind,params", PRIMS)
def test_component_form_and_bounds_agree(kind, params):
    rng = np.random.default_rng(1)
    o, d = _rays(rng, 500)
    t1 = intersect(kind, params, o, d, attrs=False).t
    t2 = ray_t(kind, params, tuple(o.T), tuple(d.T))
    assert np.array_equal(t1, t2)
    lo, hi = local_bounds(kind, params)
    p = o[np.isfinite(t1)] + t1[np.isfinite(t1), None] * d[np.isfinite(t1)]
    assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)


@pytest.mark.parametrize("kind,params", PRIMS)
def test_normals_are_unit_and_face_the_camera(kind, params):
    rng = np.random.default_rng(2)
    o, d = _rays(rng)
    t = intersect(kind, params, o, d, attrs=False).t
    hit = np.isfinite(t)
    p = o[hit] + t[hit, None] * d[hit]
    n, uv, part = surface_at(kind, params, p, d[hit])
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    assert np.mean(np.einsum("ij,ij->i", n, d[hit]) < 1e-6) > 0.98
    assert uv.shape == (hit.sum(), 2) and part.shape == (hit.sum(),)
