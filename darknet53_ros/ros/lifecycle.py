"""The detector's managed-node transitions as plain Python: :class:`ManagedDetector` (no rclpy).

Both ROS front ends use it: the plain node (``detector_node``) configures and activates at
construction and shuts down at exit; the lifecycle node (``detector_node --lifecycle``,
:mod:`darknet53_ros.ros.lifecycle_node`) maps each ``rclpy.lifecycle`` transition to one method
here. The ROS side is reached only through :class:`Ports`, so every transition is tested
without ROS.

======================  ==========================================================================
transition              effect
======================  ==========================================================================
``configure``           read and validate the parameters, load the model / TensorRT engine
                        (the CUDA context), build the
                        :class:`~darknet53_ros.ros.node_core.NodeCore`, create publishers, the
                        diagnostics timer and the
                        parameter callback (:meth:`Ports.open`); a failure leaves the node
                        unconfigured with nothing loaded
``activate``            start the inference thread, then subscribe to the cameras
``deactivate``          unsubscribe, then stop the inference thread after its current batch;
                        the engine stays loaded, the GPU idles
``cleanup``             drop publishers and timer, close the engine (frees the CUDA context)
``shutdown``            from any state: deactivate and clean up as needed; idempotent
(error processing)      :meth:`ManagedDetector.reset`: back to unconfigured, nothing loaded
======================  ==========================================================================
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
import typing
from typing import Any, Protocol

from darknet53_ros.errors import Darknet53Error
from darknet53_ros.inference.detector import Detector
from darknet53_ros.ros.node_core import NodeCore
from darknet53_ros.ros.params import NodeParams

__all__ = ['ACTIVE', 'FINALIZED', 'INACTIVE', 'UNCONFIGURED', 'LifecycleError',
           'ManagedDetector', 'Ports']

UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = 'unconfigured', 'inactive', 'active', 'finalized'
"""The primary states of a ROS 2 managed node."""


class LifecycleError(Darknet53Error):
    """A transition that is not allowed in the current state."""


class Ports(Protocol):
    """The ROS side of the node, as the transitions need it."""

    def open(self, core: NodeCore) -> None:
        """Create publishers, timers and the parameter callback for ``core`` (configure)."""

    def subscribe(self, core: NodeCore) -> None:
        """Create the camera subscriptions feeding ``core`` (activate)."""

    def unsubscribe(self) -> None:
        """Destroy the camera subscriptions (deactivate)."""

    def close(self) -> None:
        """Destroy what :meth:`open` created (cleanup)."""


CoreFactory = typing.Callable[[NodeParams, Detector, str], NodeCore]
"""``(params, detector, model_path) -> NodeCore`` (the core owns the detector from then on)."""


class ManagedDetector:
    """The configure/activate/deactivate/cleanup/shutdown state machine of the detector.

    Args:
        ports: the ROS side (:class:`Ports`).
        read_parameters: the current parameter values by name (read at each configure).
        load: ``params -> (detector, model_path)``, e.g.
            :func:`darknet53_ros.ros.model_files.load_detector`.
        make_core: builds the :class:`NodeCore` (:data:`CoreFactory`).
        stop_timeout: seconds to wait for the inference thread at deactivate / cleanup.
    """

    def __init__(self, ports: Ports, read_parameters: Callable[[], Mapping[str, Any]],
                 load: Callable[[NodeParams], tuple[Detector, Any]], make_core: CoreFactory,
                 stop_timeout: float = 10.0) -> None:
        """Start unconfigured."""
        self.ports = ports
        self.read_parameters = read_parameters
        self.load = load
        self.make_core = make_core
        self.stop_timeout = float(stop_timeout)
        self.state = UNCONFIGURED
        self.core: NodeCore | None = None

    def _expect(self, transition: str, *states: str) -> None:
        if self.state not in states:
            raise LifecycleError(f'cannot {transition} the detector while {self.state} '
                                 f'(allowed from: {", ".join(states)})')

    def configure(self) -> NodeCore:
        """Validate the parameters, load the model and open the outputs; returns the core.

        Raises:
            LifecycleError: not unconfigured.
            ConfigError, ModelError, BackendError: bad parameters or model (nothing is left
                loaded; the state stays unconfigured).
        """
        self._expect('configure', UNCONFIGURED)
        params = NodeParams.from_dict(self.read_parameters())
        detector, model_path = self.load(params)
        try:
            core = self.make_core(params, detector, str(model_path))
        except BaseException:
            detector.close()
            raise
        try:
            self.ports.open(core)
        except BaseException:
            self.ports.close()
            core.shutdown(self.stop_timeout)
            raise
        self.core = core
        self.state = INACTIVE
        return core

    def activate(self) -> None:
        """Start the inference thread, then subscribe (frames only arrive once it runs)."""
        self._expect('activate', INACTIVE)
        core = self._core()
        core.start()
        try:
            self.ports.subscribe(core)
        except BaseException:
            self.ports.unsubscribe()
            core.stop(self.stop_timeout)
            raise
        self.state = ACTIVE

    def deactivate(self) -> None:
        """Unsubscribe, then stop the inference thread (the engine stays loaded)."""
        self._expect('deactivate', ACTIVE)
        self.ports.unsubscribe()
        self._core().stop(self.stop_timeout)
        self.state = INACTIVE

    def cleanup(self) -> None:
        """Close the outputs and the engine (frees the CUDA context); back to unconfigured."""
        self._expect('cleanup', INACTIVE)
        core, self.core = self._core(), None
        self.ports.close()
        core.shutdown(self.stop_timeout)
        self.state = UNCONFIGURED

    def reset(self) -> None:
        """Back to unconfigured from any state (error processing): deactivate and clean up as
        needed; a failing step does not keep the later ones from running."""
        try:
            if self.state == ACTIVE:
                self.deactivate()
        finally:
            try:
                if self.state in (ACTIVE, INACTIVE) and self.core is not None:
                    self.cleanup()
            finally:
                if self.core is not None:
                    core, self.core = self.core, None
                    self.ports.unsubscribe()
                    self.ports.close()
                    core.shutdown(self.stop_timeout)
                if self.state != FINALIZED:
                    self.state = UNCONFIGURED

    def shutdown(self) -> None:
        """From any state: deactivate and clean up as needed, then finalized. Idempotent."""
        try:
            self.reset()
        finally:
            self.state = FINALIZED

    def _core(self) -> NodeCore:
        if self.core is None:
            raise LifecycleError(f'no node core while {self.state}')
        return self.core
