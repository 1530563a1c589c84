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
import functools
from typing import Any

from darknet53_ros.errors import ConfigError
from darknet53_ros.inference.detector import Detector
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.ingest import RawIngest
from darknet53_ros.ros.lifecycle import ManagedDetector
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import (
    PARAMETERS,
    NodeParams,
    ParamSpec,
    override_warning,
    validate_parameter,
)

__all__ = ['RosPorts', 'managed_detector', 'parameter_descriptor']


def parameter_descriptor(spec: ParamSpec) -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of a :class:`ParamSpec`."""
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
    descriptor = ParameterDescriptor(name=spec.name, type=kinds[spec.type],
                                     description=spec.description, read_only=spec.read_only,
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
    """

    def __init__(self, node: Any) -> None:
        """Declare the parameters on ``node`` and install the parameter callback."""
        self.node = node
        self.core: NodeCore | None = None
        self.outputs = _RosOutputs()
        self._subscriptions: list[Any] = []
        self._publishers: list[Any] = []
        self._label_pub: Any = None
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        for spec in PARAMETERS:
            default = list(spec.default) if spec.type == 'string_array' else spec.default
            node.declare_parameter(spec.name, default, parameter_descriptor(spec))
        # rclpy drops overrides of undeclared parameters silently: name the misspelt ones.
        warning = override_warning(getattr(node, '_parameter_overrides', {}))
        if warning:
            node.get_logger().warning(warning)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # -- what ManagedDetector needs -------------------------------------------------------------
    def read_parameters(self) -> dict[str, Any]:
        """The node's parameter values by name."""
        return {spec.name: self.node.get_parameter(spec.name).value for spec in PARAMETERS}

    def make_core(self, params: NodeParams, detector: Detector, model_path: str) -> NodeCore:
        """The core, timed by the node clock (simulated time under ``use_sim_time``)."""
        clock = self.node.get_clock()
        return NodeCore(params, detector, MessageTypes.from_rclpy(), self.outputs,
                        logger=self.node.get_logger(), now_ns=lambda: clock.now().nanoseconds,
                        frame_clock=lambda: clock.now().nanoseconds * 1e-9,
                        model_path=model_path, node_name=self.node.get_fully_qualified_name())

    def open(self, core: NodeCore) -> None:
        """Publishers (detections, annotated images, LabelInfo, /diagnostics) and the
        diagnostics timer; publishes LabelInfo once."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        node, types, outputs = self.node, core.types, self.outputs
        self.core = core

        def qos(depth: int, durability: Any = DurabilityPolicy.VOLATILE,
                reliability: Any = ReliabilityPolicy.RELIABLE) -> Any:
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                              reliability=reliability, durability=durability)

        # Annotated images are for viewers: best effort, so a slow link drops images rather
        # than holding them (RViz: set the display's Reliability Policy to Best Effort).
        annotated_qos = qos(1, reliability=ReliabilityPolicy.BEST_EFFORT)
        for camera in core.params.cameras:
            outputs.detection_pubs[camera.name] = node.create_publisher(
                types.Detection2DArray, camera.detections_topic, qos(10))
            outputs.image_pubs[camera.name] = node.create_publisher(
                types.Image, camera.annotated_topic, annotated_qos)
            outputs.compressed_pubs[camera.name] = node.create_publisher(
                types.CompressedImage, f'{camera.annotated_topic}/compressed', annotated_qos)
        self._publishers = [*outputs.detection_pubs.values(), *outputs.image_pubs.values(),
                            *outputs.compressed_pubs.values()]
        if types.LabelInfo is not None:
            self._label_pub = node.create_publisher(
                types.LabelInfo, 'label_info', qos(1, DurabilityPolicy.TRANSIENT_LOCAL))
            self._publishers.append(self._label_pub)
        self._diag_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._publishers.append(self._diag_pub)
        self._diag_timer = node.create_timer(core.params.diagnostics_period,
                                             self._publish_diagnostics)
        self._publish_label_info()

    def subscribe(self, core: NodeCore) -> None:
        """One subscription per camera (keep last 1, ``qos_reliability``)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        params = core.params
        reliability = (ReliabilityPolicy.RELIABLE if params.qos_reliability == 'reliable'
                       else ReliabilityPolicy.BEST_EFFORT)
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        for camera in params.cameras:
            msg_type = core.types.CompressedImage if camera.compressed else core.types.Image
            # raw=True: the payload is read by io/cdr.py (zero-copy pixels), rclpy's
            # deserialisation only as the fallback (ros/ingest.py).
            callback = RawIngest(core.submit, camera.name, camera.compressed,
                                 functools.partial(_deserialize, msg_type=msg_type))
            self._subscriptions.append(self.node.create_subscription(
                msg_type, camera.topic, callback, image_qos, raw=True))
        info = core.backend_info()
        self.node.get_logger().info(
            f'{info["backend"]} {info["precision"]} {info["engine_file"]} '
            f'({info["input_size"]}, {info["classes"]} classes); cameras: '
            + ', '.join(f'{c.topic} -> {c.detections_topic}' for c in params.cameras))

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
        self._label_pub = self._diag_pub = None
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
                    if any(spec.name == name for spec in PARAMETERS):
                        validate_parameter(name, value)
                return SetParametersResult(successful=True)
            applied = self.core.update_parameters(changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if 'conf_threshold' in applied:
            self._publish_label_info()
        return SetParametersResult(successful=True)

    def _publish_label_info(self) -> None:
        if self._label_pub is None or self.core is None:
            return
        msg = self.core.label_info_msg()
        if msg is not None:
            self._label_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        if self.core is not None and self._diag_pub is not None:
            self._diag_pub.publish(self.core.diagnostics_msg())


def managed_detector(ports: RosPorts, share_dir: Any = True) -> ManagedDetector:
    """The :class:`ManagedDetector` of a node, loading models relative to ``share_dir``."""
    return ManagedDetector(ports, ports.read_parameters,
                           lambda params: load_detector(params, share_dir=share_dir),
                           ports.make_core)
