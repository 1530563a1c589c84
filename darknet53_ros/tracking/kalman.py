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
        w, h = np.abs(mean[:, 2]), np.abs(mean[:, 3])
        size = np.stack([w, h, w, h, w, h, w, h], axis=1)
        size *= self._predict_weights(dt)
        transition = _transition(dt)
        mean = mean @ transition.T
        cov = transition @ cov @ transition.T
        cov[:, _DIAG8, _DIAG8] += size * size
        return mean, cov

    def _predict_weights(self, dt: float) -> np.ndarray:
        """Process noise std per box size over ``dt`` (variance linear in time)."""
        root = (dt / REFERENCE_DT) ** 0.5
        return np.array([self.position_noise] * 4
                        + [self.velocity_noise / REFERENCE_DT] * 4) * root

    def update(self, mean: np.ndarray, cov: np.ndarray, xywh: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Correct tracks [n] with their measurements [n, 4]."""
        if not len(mean):
            return mean, cov
        xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
        w, h = np.abs(mean[:, 2]), np.abs(mean[:, 3])
        r = self.measurement_noise * np.stack([w, h, w, h], axis=1)
        s = cov[:, :4, :4] + 0.0
        s[:, _DIAG4, _DIAG4] += r * r
        gain = cov[:, :, :4] @ np.linalg.inv(s)  # K = P H^T S^-1, [n, 8, 4]
        innovation = xywh - mean[:, :4]
        mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
        cov = cov - gain @ cov[:, :4, :]
        return mean, cov


_DIAG8 = np.arange(8)
_DIAG4 = np.arange(4)


def _transition(dt: float) -> np.ndarray:
    """Constant-velocity transition over ``dt`` seconds."""
    transition = np.eye(8)
    transition[_DIAG4, _DIAG4 + 4] = dt
    return transition
