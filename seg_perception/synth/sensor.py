"""Camera and depth-sensor models: what a real RGB-D camera does to a perfect render.

The colour pipeline works in linear light and mirrors a real camera's order: lens
(vignetting, defocus, optical blur), motion during exposure, photon shot noise and
read noise, gain and white balance, gamma, 8-bit quantisation, optionally JPEG.

The depth model follows active-stereo sensors (RealSense D4xx-like): noise growing
with the square of the distance, disparity quantisation, a minimum and maximum
range, and holes where such sensors lose the pattern: at depth discontinuities, on
dark (IR-absorbing) surfaces, at grazing incidence and in random speckles/blobs.
Missing readings are NaN (metres, float32), as in a 32FC1 ROS depth image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seg_perception.synth.geometry import CameraModel


@dataclass
class CameraEffects:
    """Per-frame camera imperfections; lengths in pixels, noise in linear units."""

    exposure: float = 1.0          # gain on top of auto-exposure
    ae_target: float = 0.0         # auto-exposure target mean (linear); 0 = no auto-exposure
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignette: float = 0.0          # relative fall-off at the image corner
    psf_sigma: float = 0.6         # optical blur, pixels
    defocus_sigma: float = 0.0     # extra blur when out of focus, pixels
    motion_length: float = 0.0     # motion blur streak length, pixels
    motion_angle: float = 0.0      # radians, image x towards y
    shot_noise: float = 0.002      # variance per unit linear intensity
    read_noise: float = 0.004      # standard deviation, linear units
    jpeg_quality: int = 0          # 0 = no JPEG round trip


def sample_effects(rng: np.random.Generator, motion_blur: bool = True) -> CameraEffects:
    """Random but plausible camera settings for one training frame."""
    wb = rng.uniform(0.9, 1.1, size=3)
    return CameraEffects(
        exposure=float(rng.uniform(0.8, 1.25)),
        ae_target=float(rng.uniform(0.14, 0.3)),
        white_balance=(float(wb[0]), 1.0, float(wb[2])),
        vignette=float(rng.uniform(0.0, 0.35)),
        psf_sigma=float(rng.uniform(0.45, 0.8)),
        defocus_sigma=float(rng.uniform(1.0, 2.2)) if rng.random() < 0.12 else 0.0,
        motion_length=float(rng.uniform(2.0, 9.0)) if motion_blur and rng.random() < 0.15 else 0.0,
        motion_angle=float(rng.uniform(0, np.pi)),
        shot_noise=float(rng.uniform(0.0005, 0.004)),
        read_noise=float(rng.uniform(0.002, 0.01)),
        jpeg_quality=int(rng.integers(40, 92)) if rng.random() < 0.25 else 0,
    )


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), dtype=np.float32)
    c = size // 2
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1,
             cv2.LINE_AA)
    return k / max(float(k.sum()), 1e-6)


def apply_camera(color: np.ndarray, fx: CameraEffects, rng: np.random.Generator) -> np.ndarray:
    """Turn linear radiance (H, W, 3) float32 into the uint8 RGB image a camera delivers."""
    H, W = color.shape[:2]
    gain = fx.exposure
    if fx.ae_target > 0:
        # Auto-exposure as cameras do it: scale the mean brightness towards a target,
        # within the range a real gain/shutter can reach.
        mean = float(color[::4, ::4].mean())
        gain *= float(np.clip(fx.ae_target / max(mean, 1e-4), 0.6, 2.5))
    img = color * (np.float32(gain) * np.asarray(fx.white_balance, dtype=np.float32))
    if fx.vignette > 0:
        yy, xx = np.ogrid[:H, :W]
        r2 = ((xx - (W - 1) / 2) / (W / 2)) ** 2 + ((yy - (H - 1) / 2) / (H / 2)) ** 2
        img *= (1.0 - fx.vignette * 0.5 * r2).astype(np.float32)[..., None]
    sigma = float(np.hypot(fx.psf_sigma, fx.defocus_sigma))
    if sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if fx.motion_length >= 1.5:
        img = cv2.filter2D(img, -1, _motion_kernel(fx.motion_length, fx.motion_angle))
    np.clip(img, 0.0, None, out=img)
    std = np.sqrt(img * np.float32(fx.shot_noise) + np.float32(fx.read_noise ** 2))
    img += std * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    out = (np.sqrt(img) * 255.0 + 0.5).astype(np.uint8)
    if fx.jpeg_quality > 0:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, fx.jpeg_quality])
        if ok:
            out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


@dataclass
class DepthSensor:
    """Parameters of the simulated depth camera (metres unless noted)."""

    min_range: float = 0.2
    max_range: float = 5.0
    noise_const: float = 0.001      # sigma = noise_const + noise_quad * z^2
    noise_quad: float = 0.0025
    baseline: float = 0.05          # stereo baseline for disparity quantisation
    subpixel: float = 0.125         # disparity quantisation step, pixels
    edge_drop: float = 0.7          # probability a pixel at a depth edge reads nothing
    dark_albedo: float = 0.02       # linear albedo below which the IR pattern is lost
    grazing_cos: float = 0.12       # |cos incidence| below which readings drop out
    speckle: float = 0.001          # probability of a random single-pixel hole

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial noise standard deviation (metres) at depth ``z`` metres."""
        return self.noise_const + self.noise_quad * z * z

    @staticmethod
    def sample(rng: np.random.Generator) -> "DepthSensor":
        return DepthSensor(max_range=float(rng.uniform(3.5, 6.0)), noise_quad=float(rng.uniform(0.0015, 0.004)),
                           edge_drop=float(rng.uniform(0.5, 0.9)))


def simulate_depth(z: np.ndarray, normal: np.ndarray, albedo: np.ndarray, camera: CameraModel,
                   sensor: DepthSensor, rng: np.random.Generator) -> np.ndarray:
    """Sensor depth (H, W) float32 metres with NaN holes, registered to the colour image,
    from the exact z-buffer ``z`` (inf = no surface), optical-frame normals and albedo
    luminance."""
    H, W = z.shape
    finite = np.isfinite(z)
    zf = np.where(finite, z, 0.0).astype(np.float32)
    # Smooth, spatially correlated error (calibration wobble) plus per-pixel noise.
    low = cv2.resize(rng.standard_normal((H // 24 + 2, W // 24 + 2)).astype(np.float32), (W, H),
                     interpolation=cv2.INTER_CUBIC)
    sig = sensor.sigma(zf)
    noisy = zf + sig * (rng.standard_normal((H, W), dtype=np.float32) + 0.4 * low)
    fb = camera.fx * sensor.baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.round(fb / noisy / sensor.subpixel) * sensor.subpixel
        depth = (fb / disp).astype(np.float32)
    valid = finite & (zf >= sensor.min_range) & (zf <= sensor.max_range) & np.isfinite(depth) & (disp > 0)

    # Depth discontinuities: local 3x3 range large relative to the depth.
    zc = np.where(finite, zf, 50.0).astype(np.float32)
    k = np.ones((3, 3), np.uint8)
    jump = (cv2.dilate(zc, k) - cv2.erode(zc, k)) > (0.02 + 0.03 * zc)
    fringe = cv2.dilate(jump.astype(np.uint8), k).astype(bool) & ~jump
    u = rng.random((H, W), dtype=np.float32)
    drop = (jump & (u < sensor.edge_drop)) | (fringe & (u < sensor.edge_drop * 0.3))
    # Dark surfaces and grazing incidence.
    drop |= (albedo < sensor.dark_albedo) & (u < 0.8)
    xs = (np.arange(W, dtype=np.float32) - camera.cx) / camera.fx
    ys = (np.arange(H, dtype=np.float32) - camera.cy) / camera.fy
    inv_len = 1.0 / np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2 + 1.0)
    cos_inc = np.abs(normal[..., 0] * xs[None, :] + normal[..., 1] * ys[:, None] + normal[..., 2]) * inv_len
    drop |= (cos_inc < sensor.grazing_cos) & (u < 0.7)
    drop |= rng.random((H, W), dtype=np.float32) < sensor.speckle
    if rng.random() < 0.3:  # an occasional blob where the projector pattern washes out
        blobs = np.zeros((H, W), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.ellipse(blobs, (int(rng.integers(0, W)), int(rng.integers(0, H))),
                        (int(rng.integers(3, max(4, W // 30))), int(rng.integers(3, max(4, H // 30)))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
        drop |= blobs.astype(bool)
    valid &= ~drop
    return np.where(valid, depth, np.float32(np.nan)).astype(np.float32)
