"""Launch the darknet53_ros detector for several cameras.

    ros2 launch darknet53_ros multi_camera.launch.py                       # one node, one engine
    ros2 launch darknet53_ros multi_camera.launch.py cameras:="[front, left]"  # quick test
    ros2 launch darknet53_ros multi_camera.launch.py node_per_camera:=true # one node per camera
    ros2 launch darknet53_ros multi_camera.launch.py rviz:=true \
        cameras_file:=/robot/config/cameras.yaml model:=/robot/engines/yolov3-int8.engine

The cameras are the ``cameras`` launch argument (names; each NAME's settings default from the
name: ``NAME.topic`` is ``NAME/image_raw``), else the ``cameras`` list of ``cameras_file`` (a
ROS 2 params file, see config/multi_camera.yaml: ``cameras: [front, left]`` plus ``front:
{topic: ..., transport: ...}`` per camera). By default one node serves every camera with one
engine, batching frames of several cameras per inference. With ``node_per_camera:=true`` each
camera gets its own node (and engine) ``darknet53_<NAME>`` in the namespace
``<namespace>/<NAME>``, publishing the same topics: ``<namespace>/<NAME>/detections``,
``<namespace>/<NAME>/detections/image`` and ``<namespace>/<NAME>/label_info`` in both modes.
``lifecycle:=true`` runs managed nodes (``autostart:=false``: for a lifecycle manager);
``use_sim_time:=true`` times everything on /clock; ``rviz:=true`` opens RViz2 on a
configuration generated for the launched cameras and namespace.
``ros2 launch darknet53_ros multi_camera.launch.py --show-args`` lists the arguments.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from darknet53_ros.ros.launching import node_launch_arguments

NODE_NAME = 'darknet53_detector'


def _detectors(context, *args, **kwargs):
    from darknet53_ros.ros.launching import (
        camera_node_parameters,
        detector_actions,
        is_true,
        join_names,
        launch_cameras,
        node_parameters,
        rviz_actions,
    )
    from darknet53_ros.ros.params import load_params_file

    def get(name):
        return LaunchConfiguration(name).perform(context).strip()

    def load(node_name):
        values = {}
        for path in (get('params_file'), get('cameras_file')):
            if path:
                values.update(load_params_file(path, node_name))
        return values

    namespace = get('namespace')
    overrides = {name: get(name) for name in ('model', 'backend') if get(name)}
    overrides['use_sim_time'] = is_true(get('use_sim_time'))
    values = {**load(NODE_NAME), **overrides}
    cameras = launch_cameras(values, get('cameras'), get('cameras_file') or 'params files')
    common = dict(lifecycle=is_true(get('lifecycle')), autostart=is_true(get('autostart')),
                  log_level=get('log_level'))
    if not is_true(get('node_per_camera')):
        nodes = detector_actions(NODE_NAME, namespace, [node_parameters(values, cameras)],
                                 **common)
    else:
        nodes = []
        for camera in cameras:
            node_name = f"darknet53_{camera.replace('/', '_')}"
            values = camera_node_parameters({**load(node_name), **overrides}, camera, namespace)
            nodes += detector_actions(node_name, join_names(namespace, camera), [values],
                                      **common)
    if is_true(get('rviz')):
        nodes += rviz_actions(cameras, namespace, get('rviz_config'))
    return nodes


def generate_launch_description():
    share = FindPackageShare('darknet53_ros')
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the detector node(s) and of relative camera topics.'),
        DeclareLaunchArgument(
            'cameras', default_value='',
            description='Camera names, e.g. "[front, left]" (settings default from the name: '
                        'NAME/image_raw, raw); empty: the cameras list of cameras_file.'),
        DeclareLaunchArgument(
            'cameras_file',
            default_value=PathJoinSubstitution([share, 'config', 'multi_camera.yaml']),
            description="ROS 2 params YAML with the cameras list, each camera's settings "
                        '(NAME: {topic: ..., transport: ...}) and per-robot overrides.'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([share, 'config', 'detector.yaml']),
            description='ROS 2 parameters YAML with the detector defaults (applied before '
                        'cameras_file).'),
        DeclareLaunchArgument(
            'node_per_camera', default_value='false',
            description='false: one node serves all cameras with one engine (batched); '
                        'true: one node (and engine) per camera, namespaced by camera name.'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='Model: path to an .onnx or TensorRT .engine (absolute, or relative '
                        'to the package share directory); empty: the params files value.'),
        DeclareLaunchArgument(
            'backend', default_value='',
            description='Backend: auto, onnxruntime or tensorrt; empty: the params files value.'),
        *node_launch_arguments(),
        DeclareLaunchArgument(
            'rviz', default_value='false',
            description='true: also start RViz2 on a configuration generated for the launched '
                        'cameras and namespace (their annotated images).'),
        DeclareLaunchArgument(
            'rviz_config', default_value='',
            description='RViz2 configuration used with rviz:=true instead of the generated '
                        'one.'),
        OpaqueFunction(function=_detectors),
    ])
