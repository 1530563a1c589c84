"""Launch the darknet53_ros detector for one camera.

    ros2 launch darknet53_ros detector.launch.py image_topic:=/camera/image_raw
    ros2 launch darknet53_ros detector.launch.py namespace:=robot1 camera_name:=front \
        image_topic:=/front/image_raw compressed:=true model:=/opt/engines/yolov3.engine

The node gets ``cameras: [<camera_name>]``, ``<camera_name>.topic: <image_topic>`` and
``<camera_name>.transport`` (compressed:=true: ``CompressedImage`` on
``<image_topic resolved>/compressed``, as image_transport names it). Outputs:
``<namespace>/<camera_name>/detections`` (vision_msgs/Detection2DArray),
``<namespace>/<camera_name>/detections/image`` (annotated, only while subscribed) and
``<namespace>/<camera_name>/label_info``. ``lifecycle:=true`` runs the managed node
(``autostart:=false``: for a lifecycle manager); ``use_sim_time:=true`` times everything on
/clock; ``rviz:=true`` opens RViz2 on the annotated image.
``ros2 launch darknet53_ros detector.launch.py --show-args`` lists the arguments.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from darknet53_ros.ros.launching import node_launch_arguments


def _detector(context, *args, **kwargs):
    from darknet53_ros.ros.launching import detector_actions, is_true, rviz_actions

    def get(name):
        return LaunchConfiguration(name).perform(context).strip()

    camera = get('camera_name')
    overrides = {'cameras': [camera], f'{camera}.topic': get('image_topic'),
                 f'{camera}.transport': 'compressed' if is_true(get('compressed')) else 'raw',
                 'use_sim_time': is_true(get('use_sim_time'))}
    for name in ('model', 'backend'):
        if get(name):
            overrides[name] = get(name)
    parameters = [get('params_file')] if get('params_file') else []
    parameters.append(overrides)
    actions = detector_actions(get('node_name'), get('namespace'), parameters,
                               lifecycle=is_true(get('lifecycle')),
                               autostart=is_true(get('autostart')), log_level=get('log_level'))
    if is_true(get('rviz')):
        actions += rviz_actions([camera], get('namespace'))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node and of its relative topics (e.g. robot1).'),
        DeclareLaunchArgument(
            'image_topic', default_value='/camera/image_raw',
            description='Base image topic (relative names follow the namespace); with '
                        'compressed:=true the node subscribes <image_topic>/compressed.'),
        DeclareLaunchArgument(
            'compressed', default_value='false',
            description='true: subscribe sensor_msgs/CompressedImage on '
                        '<image_topic>/compressed; false: sensor_msgs/Image on image_topic.'),
        DeclareLaunchArgument(
            'camera_name', default_value='camera',
            description='Camera name: outputs go to <camera_name>/detections, '
                        '<camera_name>/detections/image and <camera_name>/label_info; '
                        'per-camera parameters are <camera_name>.*.'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('darknet53_ros'), 'config', 'detector.yaml']),
            description='ROS 2 parameters YAML of the node (see config/detector.yaml).'),
        DeclareLaunchArgument(
            'model', default_value='',
            description='Model: path to an .onnx or TensorRT .engine (absolute, or relative '
                        'to the package share directory); empty: the params file value.'),
        DeclareLaunchArgument(
            'backend', default_value='',
            description='Backend: auto, onnxruntime or tensorrt; empty: the params file value.'),
        DeclareLaunchArgument(
            'node_name', default_value='darknet53_detector',
            description='Name of the detector node.'),
        DeclareLaunchArgument(
            'rviz', default_value='false',
            description='true: also start RViz2 on a configuration generated for this camera '
                        'and namespace.'),
        *node_launch_arguments(),
        OpaqueFunction(function=_detector),
    ])
