"""The ROS 2 detector node (``ros2 run darknet53_ros detector_node``): rclpy glue only.

All behaviour lives in :mod:`darknet53_ros.ros.node_core` (tested without ROS); this module
declares the parameters of :data:`~darknet53_ros.ros.params.PARAMETERS`, wires subscriptions,
publishers and timers to a :class:`~darknet53_ros.ros.node_core.NodeCore`, and shuts down cleanly.

Topics (relative names, so ``__ns:=`` / launch namespaces apply), per camera ``NAME``:

- subscribes ``TOPIC`` (``sensor_msgs/Image`` or ``CompressedImage``), keep last 1,
  ``qos_reliability`` (best effort by default: matches reliable and best-effort publishers);
- publishes ``NAME/detections`` (``vision_msgs/Detection2DArray``, one per processed image,
  also when empty) and ``NAME/detections/image`` (annotated ``sensor_msgs/Image``, drawn only
  while it has subscribers and ``publish_annotated`` is true);
- ``label_info`` (``vision_msgs/LabelInfo``, transient local; when vision_msgs has it) and
  ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, every ``diagnostics_period``).

Image callbacks only hand the message to the scheduler; the inference thread decodes (with the
package's own decoder, :func:`darknet53_ros.io.encodings.msg_to_bgr`), runs the shared engine on
a batch of cameras and publishes.
"""
from __future__ import annotations

from collections.abc import Sequence
import sys
from typing import Any

from darknet53_ros.errors import ConfigError, Darknet53Error
from darknet53_ros.io.messages import MessageTypes
from darknet53_ros.ros.cameras import CameraSpec
from darknet53_ros.ros.model_files import load_detector
from darknet53_ros.ros.node_core import NodeCore, Outputs
from darknet53_ros.ros.params import (
    NODE_NAME,
    PARAMETERS,
    NodeParams,
    ParamSpec,
    override_warning,
)

__all__ = ['DetectorNode', 'main', 'parameter_descriptor']


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


class _RosOutputs(Outputs):
    """Publishes the core's messages (called from the inference thread)."""

    def __init__(self) -> None:
        self.detection_pubs: dict[str, Any] = {}
        self.image_pubs: dict[str, Any] = {}

    def detections(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        self.detection_pubs[camera.name].publish(msg)

    def wants_annotated(self, camera: CameraSpec) -> bool:
        return self.image_pubs[camera.name].get_subscription_count() > 0

    def annotated(self, camera: CameraSpec, msg: Any, stamp_ns: int) -> None:
        self.image_pubs[camera.name].publish(msg)


class DetectorNode:
    """The detector: an ``rclpy`` node (:attr:`node`) around a :class:`NodeCore`.

    Args:
        node_name: ROS node name.
        share_dir: where relative model paths are looked up (default: the package share dir
            from ament, then the Python package).
        **node_kwargs: passed to ``rclpy.create_node`` (``namespace``, ``context``,
            ``parameter_overrides``, ``cli_args`` ...).

    Raises:
        ConfigError, ModelError, BackendError: bad parameters or model (the node is destroyed).
    """

    def __init__(self, node_name: str = NODE_NAME, share_dir: Any = True,
                 **node_kwargs: Any) -> None:
        """Create the node, load the model and start the inference thread."""
        import rclpy

        self.node = rclpy.create_node(node_name, **node_kwargs)
        self.core: NodeCore | None = None
        try:
            self._setup(share_dir)
        except BaseException:
            self.destroy()
            raise

    # -- construction --------------------------------------------------------------------------
    def _setup(self, share_dir: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        node = self.node
        for spec in PARAMETERS:
            default = list(spec.default) if spec.type == 'string_array' else spec.default
            node.declare_parameter(spec.name, default, parameter_descriptor(spec))
        values = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
        if override_warning(getattr(node, '_parameter_overrides', {})):
            node.get_logger().warning(override_warning(node._parameter_overrides))
        params = NodeParams.from_dict(values)
        types = MessageTypes.from_rclpy()
        detector, model_path = load_detector(params, share_dir=share_dir)
        outputs = _RosOutputs()
        clock = node.get_clock()
        try:
            self.core = NodeCore(params, detector, types, outputs, logger=node.get_logger(),
                                 now_ns=lambda: clock.now().nanoseconds, model_path=model_path,
                                 node_name=node.get_fully_qualified_name())
        except BaseException:
            detector.close()
            raise
        core = self.core
        reliability = (ReliabilityPolicy.RELIABLE if params.qos_reliability == 'reliable'
                       else ReliabilityPolicy.BEST_EFFORT)
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        image_out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                   reliability=ReliabilityPolicy.RELIABLE,
                                   durability=DurabilityPolicy.VOLATILE)
        for camera in params.cameras:
            outputs.detection_pubs[camera.name] = node.create_publisher(
                types.Detection2DArray, camera.detections_topic, out_qos)
            outputs.image_pubs[camera.name] = node.create_publisher(
                types.Image, camera.annotated_topic, image_out_qos)
        self._label_pub = None
        if types.LabelInfo is not None:
            self._label_pub = node.create_publisher(
                types.LabelInfo, 'label_info',
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._diag_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        node.add_on_set_parameters_callback(self._on_set_parameters)
        core.start()
        for camera in params.cameras:
            msg_type = types.CompressedImage if camera.compressed else types.Image
            node.create_subscription(msg_type, camera.topic, self._image_callback(camera.name),
                                     image_qos)
        self._diag_timer = node.create_timer(params.diagnostics_period,
                                             self._publish_diagnostics)
        self._publish_label_info()
        info = core.backend_info()
        node.get_logger().info(
            f'{info["backend"]} {info["precision"]} {info["engine_file"]} '
            f'({info["input_size"]}, {info["classes"]} classes); cameras: '
            + ', '.join(f'{c.topic} -> {c.detections_topic}' for c in params.cameras))

    def _image_callback(self, camera: str) -> Any:
        core = self.core

        def callback(msg: Any) -> None:
            # Only enqueue: decoding and inference happen on the inference thread.
            if core is not None:
                core.submit(camera, msg)

        return callback

    # -- callbacks -----------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: Sequence[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        if self.core is None:
            return SetParametersResult(successful=True)
        changes = {p.name: p.value for p in parameters}
        try:
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
        if self.core is not None:
            self._diag_pub.publish(self.core.diagnostics_msg())

    # -- shutdown ------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Stop the inference thread, close the backend, then destroy the rclpy node.

        The worker is joined before the backend is closed (no CUDA context released under a
        running inference) and before the publishers go away. Idempotent.
        """
        core, self.core = self.core, None
        if core is not None:
            core.shutdown()
        node, self.node = self.node, None
        if node is not None:
            node.destroy_node()

    def destroy_node(self) -> None:
        """Alias of :meth:`destroy` (rclpy naming)."""
        self.destroy()


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``detector_node``; returns the exit code."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.logging import get_logger

    rclpy.init(args=args)
    node: DetectorNode | None = None
    code = 0
    try:
        node = DetectorNode()
        rclpy.spin(node.node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Darknet53Error as exc:
        get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
