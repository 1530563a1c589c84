"""Launch the darknet53_ros detector for several cameras listed in one YAML file.

    ros2 launch darknet53_ros multi_camera.launch.py                       # one node, one engine
    ros2 launch darknet53_ros multi_camera.launch.py node_per_camera:=true # one node per camera
    ros2 launch darknet53_ros multi_camera.launch.py rviz:=true \
        cameras_file:=/robot/config/cameras.yaml model:=/robot/engines/yolov3-int8.engine

The cameras come from the ``cameras`` list of ``cameras_file`` (a ROS 2 params file, see
config/multi_camera.yaml; entries ``NAME:TOPIC[:TRANSPORT]``). By default one node serves
every camera with one engine, batching frames of several cameras per inference. With
``node_per_camera:=true`` each camera gets its own node (and engine) in the namespace
``<namespace>/<NAME>``, publishing the same topics: ``<namespace>/<NAME>/detections`` and
``<namespace>/<NAME>/detections/image`` in both modes.
``lifecycle:=true`` runs managed nodes (``autostart:=false``: for a lifecycle manager);
``use_sim_time:=true`` times everything on /clock.
``ros2 launch darknet53_ros multi_camera.launch.py --show-args`` lists the arguments.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from darknet53_ros.ros.launching import node_launch_arguments


def _join(*parts):
    inner = '/'.join(p.strip('/') for p in parts if p and p.strip('/'))
    return f'/{inner}' if inner else ''


def _detectors(context, *args, **kwargs):
    from darknet53_ros.ros.cameras import parse_cameras
    from darknet53_ros.ros.launching import detector_actions, is_true
    from darknet53_ros.ros.params import load_params_file

    def get(name):
        return LaunchConfiguration(name).perform(context).strip()

    namespace = get('namespace')
    cameras_file = get('cameras_file')
    values = load_params_file(cameras_file)
    if 'cameras' not in values:
        raise RuntimeError(f'cameras_file {cameras_file}: no cameras parameter')
    cameras = parse_cameras(values['cameras'])
    overrides = {name: get(name) for name in ('model', 'backend') if get(name)}
    overrides['use_sim_time'] = is_true(get('use_sim_time'))
    parameters = [p for p in (get('params_file'), cameras_file) if p]
    common = dict(lifecycle=is_true(get('lifecycle')), autostart=is_true(get('autostart')),
                  log_level=get('log_level'))
    if not is_true(get('node_per_camera')):
        return detector_actions('darknet53_detector', namespace, parameters + [overrides],
                                **common)
    nodes = []
    for camera in cameras:
        # The node lives in <namespace>/<camera>; relative input topics keep resolving in
        # <namespace>, and outputs go to the namespace directly (prefix_camera_name false).
        topic = camera.topic if camera.topic.startswith(('/', '~')) else \
            _join(namespace, camera.topic)
        per_camera = {**overrides, 'cameras': [f'{camera.name}:{topic}:{camera.transport}'],
                      'prefix_camera_name': False}
        nodes += detector_actions(f"darknet53_{camera.name.replace('/', '_')}",
                                  _join(namespace, camera.name), parameters + [per_camera],
                                  **common)
    return nodes


def generate_launch_description():
    share = FindPackageShare('darknet53_ros')
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the detector node(s) and of relative camera topics.'),
        DeclareLaunchArgument(
            'cameras_file',
            default_value=PathJoinSubstitution([share, 'config', 'multi_camera.yaml']),
            description="ROS 2 params YAML holding the 'cameras' list "
                        "('NAME:TOPIC[:TRANSPORT]' strings) and per-robot overrides."),
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
            description='true: also start RViz2 showing the annotated images.'),
        DeclareLaunchArgument(
            'rviz_config',
            default_value=PathJoinSubstitution([share, 'config', 'detector.rviz']),
            description='RViz2 configuration used with rviz:=true.'),
        OpaqueFunction(function=_detectors),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', LaunchConfiguration('rviz_config')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
