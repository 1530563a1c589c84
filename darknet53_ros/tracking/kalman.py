"""A constant-velocity Kalman filter over box centre and size, for many tracks at once.

State per track: ``cx, cy, w, h`` and their velocities (pixels, pixels per second). Noise
scales with the box size (as in ByteTrack / BoT-SORT) and with time: process noise is given
per :data:`REFERENCE_DT` (1/30 s) and grows linearly with the elapsed time, so a frame dropped
or a recording played at another rate changes the step, not the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ['REFERENCE_DT', 'BoxKalman']

REFERENCE_DT = 1.0 / 30.0
"""The time step the noise weights are given for (seconds)."""


@dataclass(frozen=True)
class BoxKalman:
    """Batched filter: every method takes and returns arrays over tracks.

    Attributes:
        position_noise: process noise std of the box per reference step, as a fraction of
            the box size.
        velocity_noise: process noise std of the velocity per reference step, as a fraction
            of the box size per reference step.
        measurement_noise: measurement noise std, as a fraction of the box size.
    """

    position_noise: float = 1.0 / 20
    velocity_noise: float = 1.0 / 160
    measurement_noise: float = 1.0 / 20

    def initiate(self, xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means [n, 8] and covariances [n, 8, 8] of new tracks at measurements [n, 4]."""
        xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
        mean = np.concatenate([xywh, np.zeros_like(xywh)], axis=1)
        size = np.repeat(xywh[:, 2:], 2, axis=1)[:, [0, 2, 1, 3]]  # w, h, w, h
        std = np.concatenate([2 * self.position_noise * size,
                              10 * self.velocity_noise * size / REFERENCE_DT], axis=1)
        cov = np.zeros((len(xywh), 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Predict every track ``dt`` seconds ahead (``dt`` >= 0)."""
        if not len(mean) or dt <= 0:
            return mean, cov
        steps = dt / REFERENCE_DT
        size = np.concatenate([mean[:, 2:4], mean[:, 2:4]], axis=1)[:, [0, 2, 1, 3]]
        size = np.abs(size)
        var = np.concatenate([(self.position_noise * size) ** 2,
                              (self.velocity_noise * size / REFERENCE_DT) ** 2], axis=1)
        var *= steps
        mean = mean.copy()
        mean[:, :4] += mean[:, 4:] * dt
        # F P F^T for F = [[I, dt I], [0, I]], written out blockwise
        p11, p12 = cov[:, :4, :4], cov[:, :4, 4:]
        p21, p22 = cov[:, 4:, :4], cov[:, 4:, 4:]
        new = np.empty_like(cov)
        new[:, :4, :4] = p11 + dt * (p12 + p21) + dt * dt * p22
        new[:, :4, 4:] = p12 + dt * p22
        new[:, 4:, :4] = p21 + dt * p22
        new[:, 4:, 4:] = p22
        idx = np.arange(8)
        new[:, idx, idx] += var
        return mean, new

    def update(self, mean: np.ndarray, cov: np.ndarray, xywh: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Correct tracks [n] with their measurements [n, 4]."""
        if not len(mean):
            return mean, cov
        xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
        size = np.abs(np.stack([mean[:, 2], mean[:, 3], mean[:, 2], mean[:, 3]], axis=1))
        r = (self.measurement_noise * size) ** 2
        s = cov[:, :4, :4].copy()
        idx = np.arange(4)
        s[:, idx, idx] += r
        ph = cov[:, :, :4]  # P H^T
        gain = np.linalg.solve(s, np.transpose(ph, (0, 2, 1)))  # S^-1 H P  -> K^T
        gain = np.transpose(gain, (0, 2, 1))  # K [n, 8, 4]
        innovation = xywh - mean[:, :4]
        mean = mean + np.einsum('nij,nj->ni', gain, innovation)
        cov = cov - np.einsum('nij,njk->nik', gain, cov[:, :4, :])
        return mean, cov
