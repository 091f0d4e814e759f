"""A 2.5D ray-casting renderer with an exact z-buffer.

Why ray casting rather than triangle rasterisation: every primitive has a closed-form
ray intersection, so depth and masks are exact per pixel centre (no tessellation
error on a can's silhouette) and the same routine answers "what does the camera see
along this ray" for keypoint visibility and shadow tests. Cost stays low because
each primitive only casts the rays inside its projected screen rectangle.

Pipeline per frame: planes (floor, walls) over the whole image, then each primitive
in its screen rectangle, keeping the nearest hit (depth = ray parameter, since the
rays have dz = 1); then deferred shading of only the visible pixels: material
lookup, Lambertian + Blinn-Phong from one directional light, hemispherical ambient,
and ray-cast shadows of every object on everything around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from seg_perception.synth.geometry import CameraModel
from seg_perception.synth.objects import SceneObject
from seg_perception.synth.primitives import intersect, local_bounds, ray_t, surface_at
from seg_perception.synth.textures import Material, TextureBank


@dataclass
class Plane:
    """An infinite plane ``normal . p = offset`` (world, metres); ``e1``, ``e2`` are the
    world directions of its texture coordinates."""

    normal: np.ndarray
    offset: float
    e1: np.ndarray
    e2: np.ndarray
    material: Material


@dataclass
class Light:
    """One directional light (``direction`` points from the scene towards the light,
    world frame, unit) plus ambient light; colours linear RGB."""

    direction: np.ndarray
    color: np.ndarray
    ambient: np.ndarray


@dataclass
class TableTop:
    """The rectangle of a table top, for the analytic shadow the table casts on the floor."""

    centre: np.ndarray  # world (x, y)
    yaw: float          # radians
    half: np.ndarray    # half extents (x, y) in the table frame, metres
    height: float       # metres above the floor


@dataclass
class Scene:
    """Everything the renderer needs that does not depend on the camera.

    ``planes[0]`` is the floor (z = 0): it receives the table's shadow.
    """

    objects: list[SceneObject]
    planes: list[Plane]
    light: Light
    bank: TextureBank
    sky: np.ndarray = field(default_factory=lambda: np.full(3, 0.3, np.float32))
    table: TableTop | None = None


@dataclass
class RenderOutput:
    """Per-pixel results of one render, all (H, W) unless noted.

    z:         float32 optical-frame depth of the nearest surface, metres; inf = nothing.
    instance:  int32 track id of the nearest annotated object; 0 = background.
    obj_index: int16 index into ``scene.objects`` of the nearest object; -1 = plane/none.
    normal:    (H, W, 3) float32 unit normal of the nearest surface, optical frame.
    color:     (H, W, 3) float32 linear radiance before camera effects (about 0..1).
    albedo:    (H, W) float32 albedo luminance (dark surfaces lose depth readings).
    silhouette_area: (n_objects,) int64 pixels each object covers ignoring occluders.
    """

    z: np.ndarray
    instance: np.ndarray
    obj_index: np.ndarray
    normal: np.ndarray
    color: np.ndarray
    albedo: np.ndarray
    silhouette_area: np.ndarray


@lru_cache(maxsize=8)
def _ray_planes(camera: CameraModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rays as planar float64 arrays (dx, dy) with dz = 1, and 1 / |d| (float32).

    Planar (component) arrays keep every per-pixel operation on contiguous memory,
    several times faster than (H, W, 3) arrays for these 3-vector dot products.
    """
    xs = (np.arange(camera.width, dtype=np.float64) - camera.cx) / camera.fx
    ys = (np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy
    dx = np.ascontiguousarray(np.broadcast_to(xs[None, :], (camera.height, camera.width)))
    dy = np.ascontiguousarray(np.broadcast_to(ys[:, None], (camera.height, camera.width)))
    inv = (1.0 / np.sqrt(dx * dx + dy * dy + 1.0)).astype(np.float32)
    for a in (dx, dy, inv):
        a.setflags(write=False)
    return dx, dy, inv


@dataclass
class _Prim:
    obj: int
    kind: str
    params: tuple
    material: Material
    R: np.ndarray  # local -> camera
    t: np.ndarray
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _screen_rect(points_c: np.ndarray, camera: CameraModel) -> tuple[int, int, int, int] | None:
    """Pixel rectangle covering the projections of camera-frame points; the whole
    image when some point is behind the camera (the projection would wrap)."""
    if np.any(points_c[:, 2] <= 1e-3):
        if np.all(points_c[:, 2] <= 1e-3):
            return None
        return 0, 0, camera.width, camera.height
    uv = camera.project(points_c)
    x0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(uv[:, 0].max())) + 2, camera.width)
    y1 = min(int(np.ceil(uv[:, 1].max())) + 2, camera.height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def object_to_camera(obj: SceneObject, R_cw: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation taking object-frame points to the optical frame."""
    return R_cw @ obj.R, R_cw @ (obj.t - C)


def _prims_in_camera(scene: Scene, camera: CameraModel, R_cw: np.ndarray, C: np.ndarray) -> list[_Prim]:
    prims = []
    for oi, obj in enumerate(scene.objects):
        Ro, to = object_to_camera(obj, R_cw, C)
        for p in obj.parts:
            R = Ro @ p.R
            t = Ro @ p.t + to
            lo, hi = local_bounds(p.kind, p.params)
            rect = _screen_rect(_corners(lo, hi) @ R.T + t, camera)
            if rect is not None:
                prims.append(_Prim(oi, p.kind, p.params, p.material, R, t, rect))
    return prims


def cast_rays(scene: Scene, R_cw: np.ndarray, C: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit along camera rays ``dirs`` (M, 3), optical frame, scaled to dz = 1.

    Returns (depth (M,) metres, inf for none; object index (M,), -1 for planes/none).
    Used for keypoint visibility, where the ray passes through the exact projection
    of the keypoint rather than a pixel centre.
    """
    d = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    best = np.full(len(d), np.inf)
    who = np.full(len(d), -1, dtype=np.int64)
    for pl in scene.planes:
        n_c = R_cw @ pl.normal
        c_c = pl.offset - float(pl.normal @ C)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = c_c / (d @ n_c)
        take = (t > 0) & (t < best)
        best[take] = t[take]
        who[take] = -1
    for oi, obj in enumerate(scene.objects):
        Ro, to = object_to_camera(obj, R_cw, C)
        for p in obj.parts:
            R = Ro @ p.R
            t = Ro @ p.t + to
            hit = intersect(p.kind, p.params, -R.T @ t, d @ R, attrs=False)
            take = hit.t < best
            best[take] = hit.t[take]
            who[take] = oi
    return best, who


def _local_dirs(R: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components of R^T d for camera rays d = (dx, dy, 1): the rays in a local frame."""
    return (dx * R[0, 0] + dy * R[1, 0] + R[2, 0],
            dx * R[0, 1] + dy * R[1, 1] + R[2, 1],
            dx * R[0, 2] + dy * R[1, 2] + R[2, 2])


def render(scene: Scene, camera: CameraModel, R_wc: np.ndarray, C: np.ndarray) -> RenderOutput:
    """Render ``scene`` from a camera at ``C`` (world, metres) whose optical axes are the
    columns of ``R_wc`` (world from camera)."""
    H, W = camera.height, camera.width
    Dx, Dy, inv_len = _ray_planes(camera)
    R_cw = R_wc.T
    # float64 depth: near a silhouette a quadratic's discriminant cancels, and float32
    # would be off by ~0.1 mm, enough to flip contact pixels between two surfaces.
    z = np.full((H, W), np.inf)
    sid = np.full((H, W), -1, dtype=np.int16)  # surface id: planes first, then primitives
    n_planes = len(scene.planes)
    n_obj = len(scene.objects)

    # Depth pass. Planes: t = c / (n . d) with the camera at the optical-frame origin.
    plane_n = np.zeros((n_planes, 3))
    for i, pl in enumerate(scene.planes):
        n_c = R_cw @ pl.normal
        c_c = pl.offset - float(pl.normal @ C)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = c_c / (Dx * n_c[0] + Dy * n_c[1] + n_c[2])
        take = (t > 0) & (t < z)
        np.copyto(z, t, where=take)
        sid[take] = i
        plane_n[i] = n_c if c_c < 0 else -n_c  # face the camera
    prims = _prims_in_camera(scene, camera, R_cw, C)
    sil = np.zeros((H, W), dtype=np.int64)  # bit i set where object i's silhouette covers
    for k, p in enumerate(prims):
        x0, y0, x1, y1 = p.rect
        th = ray_t(p.kind, p.params, -p.R.T @ p.t, _local_dirs(p.R, Dx[y0:y1, x0:x1], Dy[y0:y1, x0:x1]))
        valid = th < np.inf
        if not valid.any():
            continue
        if p.obj < 63:
            sil[y0:y1, x0:x1][valid] |= np.int64(1) << np.int64(p.obj)
        zr = z[y0:y1, x0:x1]
        take = th < zr
        np.copyto(zr, th, where=take)
        sid[y0:y1, x0:x1][take] = n_planes + k

    # Per-pixel identity.
    obj_of_sid = np.array([-1] * n_planes + [p.obj for p in prims] + [-1], dtype=np.int16)
    obj_index = obj_of_sid[sid]  # sid == -1 picks the trailing -1
    track_of_obj = np.array([o.track_id if o.class_name is not None else 0 for o in scene.objects] + [0],
                            dtype=np.int32)
    instance = track_of_obj[obj_index]

    # Deferred shading: normals and materials only for the visible pixels.
    table = np.zeros((n_planes + len(prims) + 1, 3), np.float32)
    table[:n_planes] = plane_n
    N = [table[:, a][sid] for a in range(3)]  # planar normals; primitives filled below
    albedo = np.empty((H, W, 3), dtype=np.float32)
    albedo[:] = scene.sky
    spec = np.zeros((H, W), dtype=np.float32)
    shin = np.ones((H, W), dtype=np.float32)
    for i, pl in enumerate(scene.planes):
        sel = sid == i
        if not sel.any():
            continue
        # World texture coordinates of plane points: (z d) . e + C . e.
        zs, dxs, dys = z[sel], Dx[sel], Dy[sel]
        e1, e2 = R_cw @ pl.e1, R_cw @ pl.e2
        puv = np.stack([zs * (dxs * e1[0] + dys * e1[1] + e1[2]) + pl.e1 @ C,
                        zs * (dxs * e2[0] + dys * e2[1] + e2[2]) + pl.e2 @ C], axis=1).astype(np.float32)
        a, sp, sh = pl.material.evaluate(puv, np.zeros(len(zs), np.int8), scene.bank)
        albedo[sel], spec[sel], shin[sel] = a, sp, sh
    aflat = albedo.reshape(-1, 3)
    zflat = z.reshape(-1)
    for k, p in enumerate(prims):
        x0, y0, x1, y1 = p.rect
        ys, xs = np.nonzero(sid[y0:y1, x0:x1] == n_planes + k)
        if len(ys) == 0:
            continue
        idx = (ys + y0) * W + (xs + x0)  # flat pixel indices: faster than boolean views
        zs, dxs, dys = zflat[idx], Dx.reshape(-1)[idx], Dy.reshape(-1)[idx]
        d_c = np.stack([dxs, dys, np.ones_like(dxs)], axis=1)
        n_l, uv, part = surface_at(p.kind, p.params, (d_c * zs[:, None] - p.t) @ p.R, d_c @ p.R)
        n_c = n_l @ p.R.T
        for a in range(3):
            N[a].reshape(-1)[idx] = n_c[:, a]
        alb, sp, sh = p.material.evaluate(uv.astype(np.float32), part, scene.bank)
        aflat[idx] = alb
        spec.reshape(-1)[idx] = sp
        shin.reshape(-1)[idx] = sh

    finite = z < np.inf
    L = (R_cw @ scene.light.direction).astype(np.float32)
    ndl_raw = N[0] * L[0] + N[1] * L[1] + N[2] * L[2]
    ndl = np.maximum(ndl_raw, 0.0)
    lit = _shadows(scene, camera, R_cw, C, z, N, obj_index, ndl > 0, sid == 0, Dx, Dy, L)
    up = (R_cw @ np.array([0.0, 0.0, 1.0])).astype(np.float32)
    direct = ndl * lit
    sky = 0.65 + 0.35 * (N[0] * up[0] + N[1] * up[1] + N[2] * up[2])
    color = albedo * (sky[..., None] * scene.light.ambient + direct[..., None] * scene.light.color)
    if spec.any():
        # Blinn-Phong with h = (v + L) / |v + L| and v = -d / |d|:
        # n.h = (n.v + n.L) / sqrt(2 + 2 v.L).
        ndv = -(N[0] * Dx + N[1] * Dy + N[2]).astype(np.float32) * inv_len
        vdl = -(Dx * L[0] + Dy * L[1] + L[2]).astype(np.float32) * inv_len
        ndh = (ndv + ndl_raw) / np.sqrt(np.maximum(2.0 + 2.0 * vdl, 1e-6))
        np.clip(ndh, 0.0, 1.0, out=ndh)
        color += (spec * np.power(ndh, shin) * direct)[..., None] * scene.light.color
    color[~finite] = scene.sky

    sil_area = np.array([np.count_nonzero(sil & (np.int64(1) << np.int64(i))) if i < 63 else 0
                         for i in range(n_obj)], dtype=np.int64)
    lum = albedo @ np.array([0.3, 0.59, 0.11], dtype=np.float32)
    return RenderOutput(z.astype(np.float32), instance, obj_index, np.stack(N, axis=-1), color, lum, sil_area)


def _shadows(scene: Scene, camera: CameraModel, R_cw: np.ndarray, C: np.ndarray, z: np.ndarray,
             N: list[np.ndarray], obj_index: np.ndarray, facing: np.ndarray, floor: np.ndarray,
             Dx: np.ndarray, Dy: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Fraction of direct light reaching each pixel, (H, W) float32 in [0, 1].

    Only pixels facing the light (``facing``) can be shadowed; ``floor`` marks the
    floor pixels, which receive the table's shadow. Each object tests shadow rays
    only inside the screen rectangle of its shadow volume (its box swept along the
    light down to the surface it stands on), and first against its bounding sphere,
    so the cost follows object size, not image size. The result is blurred a little:
    real lights are not points, and hard one-pixel shadow edges look fake.
    """
    H, W = z.shape
    shade = np.ones((H, W), dtype=np.float32)
    Lw = scene.light.direction
    if Lw[2] <= 0.05:
        return shade
    Lc = L.astype(np.float64)
    for oi, obj in enumerate(scene.objects):
        # Objects off screen are included: their shadows may still fall into view.
        if not obj.casts_shadow:
            continue
        lo, hi = obj.bounds()
        corners_w = _corners(lo, hi) @ obj.R.T + obj.t
        drop = (corners_w[:, 2] - obj.t[2] + 0.005) / Lw[2]
        swept = np.concatenate([corners_w, corners_w - drop[:, None] * Lw[None, :]])
        rect = _screen_rect((swept - C) @ R_cw.T, camera)
        if rect is None:
            continue
        x0, y0, x1, y1 = rect
        ys, xs = np.nonzero(facing[y0:y1, x0:x1] & (obj_index[y0:y1, x0:x1] != oi))
        if len(ys) == 0:
            continue
        idx = (ys + y0) * W + (xs + x0)
        zs = z.reshape(-1)[idx]
        # Receiver points, lifted 0.2 mm off their surface against self-hits.
        P = [zs * Dx.reshape(-1)[idx], zs * Dy.reshape(-1)[idx], zs.copy()]
        for a in range(3):
            P[a] += N[a].reshape(-1)[idx] * 2e-4
        # Bounding-sphere cull: keep rays that pass within the object's radius.
        Ro, to = object_to_camera(obj, R_cw, C)
        centre = Ro @ ((lo + hi) / 2) + to
        rad2 = float(np.sum(((hi - lo) / 2) ** 2)) * 1.0001 + 1e-6
        w = [centre[a] - P[a] for a in range(3)]
        along = w[0] * Lc[0] + w[1] * Lc[1] + w[2] * Lc[2]
        cand = np.flatnonzero((along > 0) & (w[0] * w[0] + w[1] * w[1] + w[2] * w[2] - along * along < rad2))
        if len(cand) == 0:
            continue
        Pc = [P[a][cand] for a in range(3)]
        hit_any = np.zeros(len(cand), dtype=bool)
        for part in obj.parts:
            R = Ro @ part.R
            t = Ro @ part.t + to
            todo = np.flatnonzero(~hit_any)
            if len(todo) == 0:
                break
            rel = [Pc[a][todo] - t[a] for a in range(3)]
            o_l = [rel[0] * R[0, j] + rel[1] * R[1, j] + rel[2] * R[2, j] for j in range(3)]
            d_l = Lc @ R
            full = [np.full(len(todo), d_l[j]) for j in range(3)]
            hit_any[todo[ray_t(part.kind, part.params, o_l, full) < np.inf]] = True
        shade.reshape(-1)[idx[cand[hit_any]]] = 0.0
    if scene.table is not None:
        _table_shadow(scene.table, Lw, R_cw, C, camera, floor, shade)
    return cv2.GaussianBlur(shade, (0, 0), 1.2)


def _table_shadow(tab: TableTop, Lw: np.ndarray, R_cw: np.ndarray, C: np.ndarray, camera: CameraModel,
                  floor: np.ndarray, shade: np.ndarray) -> None:
    """The table top's shadow on the floor (pixels ``floor``), found analytically: the
    table-top rectangle slid along the light onto z = 0 is a quadrilateral on the floor,
    so its image is a filled polygon."""
    c, s = np.cos(tab.yaw), np.sin(tab.yaw)
    hx, hy = tab.half
    corners = np.array([[sx * hx, sy * hy] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    xy = corners @ np.array([[c, s], [-s, c]]) + tab.centre
    top = np.column_stack([xy, np.full(4, tab.height)])
    on_floor = top - (tab.height / Lw[2]) * Lw[None, :]
    pc = (on_floor - C) @ R_cw.T
    if np.any(pc[:, 2] <= 0.05):
        # Part of the shadow is behind the camera: the polygon would not project
        # correctly, so test the visible floor points instead.
        ys, xs = np.nonzero(floor)
        if len(ys) == 0:
            return
        dirs = np.column_stack([(xs - camera.cx) / camera.fx, (ys - camera.cy) / camera.fy, np.ones(len(xs))])
        dw = dirs @ R_cw
        t = -C[2] / dw[:, 2]
        P = C + t[:, None] * dw
        Q = P[:, :2] + (tab.height / Lw[2]) * Lw[None, :2] - tab.centre
        qx = c * Q[:, 0] + s * Q[:, 1]
        qy = -s * Q[:, 0] + c * Q[:, 1]
        dark = (np.abs(qx) <= hx) & (np.abs(qy) <= hy)
        shade[ys[dark], xs[dark]] = 0.0
        return
    uv = camera.project(pc)
    poly = np.zeros(floor.shape, np.uint8)
    cv2.fillPoly(poly, [np.round(uv * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    shade[(poly > 0) & floor] = 0.0
