"""Cameras on a sphere around the object, in Zero-1-to-3's conventions (supplement G.3, eq. S1).

World frame: right-handed, +z up, object centred at the origin.

A camera is ``(elevation_deg, azimuth_deg, radius)``: its centre is
``radius * (cos e cos a, cos e sin a, sin e)`` and it looks at the origin. Zero-1-to-3 uses
the polar angle ``theta = 90 deg - elevation``.

Camera frame: **OpenCV** (x right, y down, z forward = optical axis). A world-to-camera matrix
``w2c = [[R, t], [0, 1]]`` maps world points to camera coordinates ``x_c = R x_w + t``; the
camera centre is ``C = -R^T t``. Points in front of the camera have ``z_c > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Camera(NamedTuple):
    elevation_deg: float
    azimuth_deg: float
    radius: float

    @property
    def polar_deg(self) -> float:
        return 90.0 - self.elevation_deg

    def eye(self) -> np.ndarray:
        return spherical_to_cartesian(self.elevation_deg, self.azimuth_deg, self.radius)

    def w2c(self) -> np.ndarray:
        return look_at(self.eye())

    def to_dict(self) -> dict:
        return {"elevation_deg": self.elevation_deg, "azimuth_deg": self.azimuth_deg, "radius": self.radius}


def spherical_to_cartesian(elevation_deg: float, azimuth_deg: float, radius: float) -> np.ndarray:
    e, a = np.radians(elevation_deg), np.radians(azimuth_deg)
    return radius * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def sample_cameras(
    n: int,
    radius_range: Sequence[float] = (1.5, 2.2),
    elevation_range_deg: Sequence[float] = (-10.0, 40.0),
    seed: int = 0,
) -> list[Camera]:
    """``n`` cameras, elevation, azimuth in [0, 360) and radius each uniform and independent."""
    rng = np.random.default_rng(seed)
    el = rng.uniform(*elevation_range_deg, size=n)
    az = rng.uniform(0.0, 360.0, size=n)
    r = rng.uniform(*radius_range, size=n)
    return [Camera(float(e), float(a), float(d)) for e, a, d in zip(el, az, r, strict=True)]


def fixed_cameras(
    azimuths: int | Sequence[float] = 16,
    elevations_deg: Sequence[float] = (0.0, 30.0),
    radius: float = 1.5,
) -> list[Camera]:
    """The GSO protocol: evenly spaced azimuths (or the given ones) at each elevation."""
    if isinstance(azimuths, int):
        azimuths = [360.0 * k / azimuths for k in range(azimuths)]
    return [Camera(float(e), float(a), float(radius)) for e in elevations_deg for a in azimuths]


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target``.

    Rows of R are the camera's right (x), down (y) and forward (z) axes in world coordinates;
    image "up" is as close to ``up`` as possible. Looking straight along ``up`` falls back to
    world +y as the up hint.
    """
    eye = np.asarray(eye, dtype=np.float64)
    f = np.asarray(target, dtype=np.float64) - eye
    f /= np.linalg.norm(f)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(f, up)
    if np.linalg.norm(right) < 1e-8:
        right = np.cross(f, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, f])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def relative_pose(w2c_a: np.ndarray, w2c_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, T) taking camera a's coordinates to camera b's: ``x_b = R x_a + T`` (eq. S1).

    ``R = R_b R_a^T`` and ``T = t_b - R t_a``, so ``w2c_b == [[R, T], [0, 1]] @ w2c_a``.
    """
    ra, ta = w2c_a[:3, :3], w2c_a[:3, 3]
    rb, tb = w2c_b[:3, :3], w2c_b[:3, 3]
    r = rb @ ra.T
    return r, tb - r @ ta


def zero123_pose(cam_a: Camera, cam_b: Camera) -> np.ndarray:
    """Zero-1-to-3's 4-number view change: (d polar [rad], sin d azimuth, cos d azimuth, d radius).

    Polar is ``90 deg - elevation``; as in Zero-1-to-3's ``get_T``, the polar change is in
    radians and each delta is target (b) minus condition (a).
    """
    d_polar = np.radians(cam_b.polar_deg - cam_a.polar_deg)
    d_az = np.radians(cam_b.azimuth_deg - cam_a.azimuth_deg)
    return np.array([d_polar, np.sin(d_az), np.cos(d_az), cam_b.radius - cam_a.radius])
