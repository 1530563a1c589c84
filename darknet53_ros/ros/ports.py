"""The rclpy side of the detector, shared by the plain and the lifecycle node: :class:`RosPorts`.

Declares the parameters of :data:`~darknet53_ros.ros.params.PARAMETERS` (with descriptors),
builds the :class:`~darknet53_ros.ros.node_core.NodeCore` on the node clock, and creates and
destroys publishers, the diagnostics timer and the camera subscriptions when
:class:`~darknet53_ros.ros.lifecycle.ManagedDetector` asks (its
:class:`~darknet53_ros.ros.lifecycle.Ports`). rclpy is imported where used, so this module
imports without ROS.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
import functools
from typing import Any

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.ros.cameras import CAMERA_PARAMETERS, CameraSpec, resolve_topics
from darknet53_ros.ros.ingest import RawIngest
from darknet53_ros.ros.lifecycle import ManagedDetector
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import (
    PARAMETERS,
    NodeParams,
    ParamSpec,
    override_warning,
    parameter_spec,
    validate_parameter,
)
from darknet53_ros.ros.qos import (
    overriding_options,
    qos_override_warning,
    qos_profile,
    unmatched_qos_overrides,
)

__all__ = ['RosPorts', 'managed_detector', 'parameter_descriptor']


def parameter_descriptor(spec: ParamSpec, name: str = '', read_only: bool | None = None
                         ) -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of a :class:`ParamSpec` (``name``: the full
    name of a camera parameter; ``read_only``: default ``spec.read_only``)."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    kinds = {
        'string': ParameterType.PARAMETER_STRING,
        'bool': ParameterType.PARAMETER_BOOL,
        'integer': ParameterType.PARAMETER_INTEGER,
        'double': ParameterType.PARAMETER_DOUBLE,
        'string_array': ParameterType.PARAMETER_STRING_ARRAY,
    }
    descriptor = ParameterDescriptor(
        name=name or spec.name, type=kinds[spec.type], description=spec.description,
        read_only=spec.read_only if read_only is None else read_only,
        additional_constraints=spec.constraints)
    if spec.minimum is not None and spec.maximum is not None:
        if spec.type == 'double':
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
        elif spec.type == 'integer':
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return descriptor


def _deserialize(data: bytes, msg_type: Any) -> Any:
    """rclpy's deserialisation: the fallback of :class:`RawIngest`."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(data, msg_type)


class _RosOutputs(Outputs):
    """Publishes the core's messages (detections from the inference thread, annotated images
    as serialized CDR from the annotator thread)."""

    serialized = True

    def __init__(self) -> None:
        self.detection_pubs: dict[str, Any] = {}
        self.image_pubs: dict[str, Any] = {}
        self.compressed_pubs: dict[str, Any] = {}

    def detections(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        self.detection_pubs[camera.name].publish(msg)

    @staticmethod
    def _listened(pubs: dict[str, Any], camera: CameraSpec) -> bool:
        pub = pubs.get(camera.name)
        return pub is not None and pub.get_subscription_count() > 0

    def wants_annotated(self, camera: CameraSpec) -> bool:
        return self._listened(self.image_pubs, camera)

    def annotated(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        self.image_pubs[camera.name].publish(msg)

    def wants_annotated_compressed(self, camera: CameraSpec) -> bool:
        return self._listened(self.compressed_pubs, camera)

    def annotated_compressed(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        self.compressed_pubs[camera.name].publish(msg)


class RosPorts:
    """The rclpy side of a :class:`~darknet53_ros.ros.lifecycle.ManagedDetector`
    (:class:`~darknet53_ros.ros.lifecycle.Ports`): parameters, publishers, timer, subscriptions.

    Args:
        node: the rclpy node (plain or lifecycle).
        managed: a lifecycle node: parameters applied at configure are writable while it is
            unconfigured (and refused while configured); a plain node declares them read-only.
    """

    def __init__(self, node: Any, managed: bool = False) -> None:
        """Declare the node's and the cameras' parameters and install the parameter callback."""
        self.node = node
        self.managed = managed
        self.core: NodeCore | None = None
        self.types: MessageTypes | None = None  # default: rclpy's (tests pass others)
        self.outputs = _RosOutputs()
        self._subscriptions: list[Any] = []
        self._publishers: list[Any] = []
        self._label_pubs: dict[str, Any] = {}
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        for spec in PARAMETERS:
            self._declare(spec, spec.name, spec.default)
        names = self._declare_cameras(node.get_parameter('cameras').value)
        # rclpy drops overrides of undeclared parameters silently: name the misspelt ones.
        warning = override_warning(self._overrides(), names)
        if warning:
            node.get_logger().warning(warning)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ----------------------------------------------------------------------------
    def _overrides(self) -> list[str]:
        return list(getattr(self.node, '_parameter_overrides', {}))

    def _declare(self, spec: ParamSpec, name: str, default: Any) -> None:
        if self.node.has_parameter(name):
            return
        read_only = spec.read_only and not self.managed
        value = list(default) if spec.type == 'string_array' else default
        try:
            self.node.declare_parameter(name, value,
                                        parameter_descriptor(spec, name, read_only))
        except Exception as exc:  # an override of the wrong type, a rejected value
            raise ConfigError(f'parameter {name}: {type(exc).__name__}: {exc}') from None

    def _declare_cameras(self, names: Any) -> list[str]:
        """Declare ``NAME.<key>`` for every valid camera name (defaults from the name); the
        names are checked at configure. Returns the declared camera names."""
        declared = []
        for name in names if isinstance(names, (list, tuple)) else []:
            try:
                validate_parameter(f'{name}.topic', f'{name}/image_raw')
            except ConfigError:
                continue  # reported by configure, with the name at fault
            for spec in CAMERA_PARAMETERS:
                self._declare(spec, f'{name}.{spec.name}', spec.default_for(name))
            declared.append(name)
        return declared

    def read_parameters(self) -> dict[str, Any]:
        """The node's parameter values by name, with ``NAME.<key>`` of the listed cameras."""
        values = {spec.name: self.node.get_parameter(spec.name).value for spec in PARAMETERS}
        for name in self._declare_cameras(values['cameras']):
            for spec in CAMERA_PARAMETERS:
                key = f'{name}.{spec.name}'
                values[key] = self.node.get_parameter(key).value
        return values

    # -- what ManagedDetector needs -------------------------------------------------------------
    def make_core(self, params: NodeParams, detector: Detector, model_path: str) -> NodeCore:
        """The core, timed by the node clock (simulated time under ``use_sim_time``), with the
        camera topics expanded and remapped by this node."""
        clock = self.node.get_clock()
        params = replace(params, cameras=resolve_topics(params.cameras,
                                                        self.node.resolve_topic_name))
        types = self.types or MessageTypes.from_rclpy()
        return NodeCore(params, detector, types, self.outputs,
                        logger=self.node.get_logger(), now_ns=lambda: clock.now().nanoseconds,
                        frame_clock=lambda: clock.now().nanoseconds * 1e-9,
                        model_path=model_path, node_name=self.node.get_name())

    def _publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        try:
            publisher = self.node.create_publisher(msg_type, topic, qos,
                                                   qos_overriding_options=overriding_options())
        except (RuntimeError, ValueError) as exc:  # a bad qos_overrides value
            raise ConfigError(f'publisher {topic}: {exc}') from None
        self._publishers.append(publisher)
        return publisher

    def open(self, core: NodeCore) -> None:
        """Publishers (per camera: detections, annotated images, LabelInfo; /diagnostics), all
        QoS-overridable, and the diagnostics timer; publishes each camera's LabelInfo once."""
        from diagnostic_msgs.msg import DiagnosticArray

        types, outputs = core.types, self.outputs
        self.core = core
        # Annotated images are for viewers: best effort, so a slow link drops images rather
        # than holding them (RViz: set the display's Reliability Policy to Best Effort).
        for camera in core.params.cameras:
            outputs.detection_pubs[camera.name] = self._publisher(
                types.Detection2DArray, camera.detections_topic, qos_profile(10))
            outputs.image_pubs[camera.name] = self._publisher(
                types.Image, camera.annotated_topic, qos_profile(1, reliable=False))
            outputs.compressed_pubs[camera.name] = self._publisher(
                types.CompressedImage, f'{camera.annotated_topic}/compressed',
                qos_profile(1, reliable=False))
            if types.LabelInfo is not None:
                self._label_pubs[camera.name] = self._publisher(
                    types.LabelInfo, camera.label_info_topic,
                    qos_profile(1, transient_local=True))
        self._diag_pub = self._publisher(DiagnosticArray, '/diagnostics', qos_profile(10))
        self._diag_timer = self.node.create_timer(core.params.diagnostics_period,
                                                  self._publish_diagnostics)
        self._publish_label_info()

    def subscribe(self, core: NodeCore) -> None:
        """One subscription per camera (keep last 1, ``NAME.reliability``, QoS-overridable) on
        its resolved input topic; then names the ``qos_overrides`` that matched nothing."""
        for camera in core.params.cameras:
            msg_type = core.types.CompressedImage if camera.compressed else core.types.Image
            qos = qos_profile(1, reliable=camera.reliability == 'reliable')
            # raw=True: the payload is read by io/cdr.py (zero-copy pixels), rclpy's
            # deserialisation only as the fallback (ros/ingest.py).
            callback = RawIngest(core.submit, camera.name, camera.compressed,
                                 functools.partial(_deserialize, msg_type=msg_type))
            try:
                subscription = self.node.create_subscription(
                    msg_type, camera.input_topic, callback, qos,
                    qos_overriding_options=overriding_options(), raw=True)
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(f'camera {camera.name}: subscription {camera.input_topic}: '
                                  f'{exc}') from None
            self._subscriptions.append(subscription)
        declared = list(self.node.get_parameters_by_prefix(''))
        warning = qos_override_warning(unmatched_qos_overrides(self._overrides(), declared),
                                       declared)
        if warning:
            self.node.get_logger().warning(warning)
        info = core.backend_info()
        self.node.get_logger().info(
            f'{info["backend"]} {info["precision"]} {info["engine_file"]} '
            f'({info["input_size"]}, {info["classes"]} classes); cameras: ' + ', '.join(
                f'{c.input_topic} ({c.transport}, '
                f'{s.qos_profile.reliability.name.lower()}) -> {c.detections_topic}'
                for c, s in zip(core.params.cameras, self._subscriptions)))

    def unsubscribe(self) -> None:
        """Destroy the camera subscriptions."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            self.node.destroy_subscription(subscription)

    def close(self) -> None:
        """Destroy the timer and publishers."""
        self.core = None
        if self._diag_timer is not None:
            self.node.destroy_timer(self._diag_timer)
            self._diag_timer = None
        publishers, self._publishers = self._publishers, []
        for publisher in publishers:
            self.node.destroy_publisher(publisher)
        self._label_pubs.clear()
        self._diag_pub = None
        self.outputs.detection_pubs.clear()
        self.outputs.image_pubs.clear()
        self.outputs.compressed_pubs.clear()

    # -- callbacks -----------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: Sequence[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        changes = {p.name: p.value for p in parameters}
        try:
            if self.core is None:  # unconfigured: validated now, applied at configure
                for name, value in changes.items():
                    if parameter_spec(name) is not None:
                        validate_parameter(name, value)
                if 'cameras' in changes:  # ros2 param set NEW.topic works from now on
                    self._declare_cameras(changes['cameras'])
                return SetParametersResult(successful=True)
            applied = self.core.update_parameters(changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if any(name.endswith('conf_threshold') for name in applied):
            self._publish_label_info()
        return SetParametersResult(successful=True)

    def _publish_label_info(self) -> None:
        core = self.core
        if core is None:
            return
        for name, publisher in self._label_pubs.items():
            msg = core.label_info_msg(camera=name)
            if msg is not None:
                publisher.publish(msg)

    def _publish_diagnostics(self) -> None:
        if self.core is not None and self._diag_pub is not None:
            self._diag_pub.publish(self.core.diagnostics_msg())


def managed_detector(ports: RosPorts, share_dir: Any = True) -> ManagedDetector:
    """The :class:`ManagedDetector` of a node, loading models relative to ``share_dir``."""
    return ManagedDetector(ports, ports.read_parameters,
                           lambda params: load_detector(params, share_dir=share_dir),
                           ports.make_core)
