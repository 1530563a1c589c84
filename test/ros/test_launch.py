"""Launch files and config files: arguments described, parameters match the schema
(darknet53_ros.ros.params). The parameter reference is generated from the schema
(test/doc/test_reference.py)."""
import ast
import importlib.util
from pathlib import Path
import re

import pytest
import yaml

from darknet53_ros.errors import ConfigError
from darknet53_ros.ros.cameras import CAMERA_PARAMETERS
from darknet53_ros.ros.launching import (
    NODE_LAUNCH_ARGUMENTS,
    camera_node_parameters,
    launch_cameras,
    node_parameters,
)
from darknet53_ros.ros.params import PARAMETERS, NodeParams, load_params_file
from darknet53_ros.ros.rviz_config import rviz_config_text, write_rviz_config

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / 'launch'
CONFIG = ROOT / 'config'
PARAM_NAMES = {spec.name for spec in PARAMETERS}

COMMON_ARGS = {'lifecycle', 'autostart', 'use_sim_time', 'log_level'}
EXPECTED_ARGS = {
    'detector.launch.py': {'namespace', 'image_topic', 'compressed', 'params_file', 'model',
                           'backend', 'camera_name', 'rviz', *COMMON_ARGS},
    'multi_camera.launch.py': {'namespace', 'cameras', 'cameras_file', 'params_file',
                               'node_per_camera', 'model', 'backend', 'rviz', 'rviz_config',
                               *COMMON_ARGS},
}


def _declared_arguments(path):
    """{name: description} of every DeclareLaunchArgument call in a launch file's source."""
    tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == \
                'DeclareLaunchArgument':
            assert node.args and isinstance(node.args[0], ast.Constant), \
                f'{path.name}:{node.lineno}: argument name must be a literal'
            keywords = {k.arg: k.value for k in node.keywords}
            assert 'description' in keywords, \
                f'{path.name}:{node.lineno}: {node.args[0].value} has no description'
            description = ast.literal_eval(keywords['description'])
            assert isinstance(description, str) and len(description) > 10
            assert 'default_value' in keywords, f'{node.args[0].value}: no default'
            found[node.args[0].value] = description
        if isinstance(node, ast.Starred) and getattr(node.value.func, 'id', None) == \
                'node_launch_arguments':
            found.update({name: text for name, _, text in NODE_LAUNCH_ARGUMENTS})
    return found


def _used_configurations(path):
    """Names read with get('x') or LaunchConfiguration('x')."""
    tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) in (
                'get', 'LaunchConfiguration')
            and node.args and isinstance(node.args[0], ast.Constant)}


@pytest.mark.parametrize('name', sorted(EXPECTED_ARGS))
def test_launch_arguments_declared_and_described(name):
    path = LAUNCH / name
    declared = _declared_arguments(path)
    assert EXPECTED_ARGS[name] <= set(declared)
    assert _used_configurations(path) <= set(declared)
    source = path.read_text(encoding='utf-8')
    assert 'detector_actions(' in source  # darknet53_ros.ros.launching: detector_node


def test_detector_yaml_declares_exactly_the_node_parameters():
    values = load_params_file(CONFIG / 'detector.yaml')
    assert set(values) == PARAM_NAMES
    params = NodeParams.from_dict(values, 'detector.yaml')
    defaults = {spec.name: spec.default for spec in PARAMETERS}
    for name, value in values.items():
        if name != 'cameras':
            assert value == defaults[name], f'detector.yaml {name} differs from the default'
    assert [(c.name, c.topic, c.transport) for c in params.cameras] == [
        ('camera', 'camera/image_raw', 'raw')]
    text = (CONFIG / 'detector.yaml').read_text(encoding='utf-8')
    assert text.count('    # (runtime)') == sum(not s.read_only for s in PARAMETERS)


def _yaml_comments(path, indent=4):
    """{parameter: the comment lines just above it} of a params YAML file (keys at
    ``indent``)."""
    comments, block = {}, []
    pad = ' ' * indent
    for line in path.read_text(encoding='utf-8').splitlines():
        match = re.match(rf'^{pad}([a-z_]+):', line)
        if line.startswith(f'{pad}#'):
            block.append(line.strip().lstrip('#').strip())
        elif match:
            comments[match[1]] = ' '.join(block)
            block = []
        else:
            block = []
    return comments


def test_detector_yaml_documents_every_parameter():
    comments = _yaml_comments(CONFIG / 'detector.yaml')
    assert list(comments) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        assert len(comments[spec.name]) > 10, f'detector.yaml: {spec.name} has no comment'
        assert ('(runtime)' in comments[spec.name]) == (not spec.read_only), \
            f'detector.yaml: (runtime) mark of {spec.name}'


def test_multi_camera_yaml_documents_every_camera_parameter():
    """The first camera of config/multi_camera.yaml spells out every NAME.<key> with its
    default (the topic aside) and a comment, (runtime) where it is."""
    values = load_params_file(CONFIG / 'multi_camera.yaml')
    first = values['cameras'][0]
    block = {k.split('.', 1)[1]: v for k, v in values.items() if k.startswith(f'{first}.')}
    assert list(block) == [spec.name for spec in CAMERA_PARAMETERS]
    for spec in CAMERA_PARAMETERS:
        if spec.name != 'topic':
            assert block[spec.name] == spec.default_for(first), spec.name
    text = (CONFIG / 'multi_camera.yaml').read_text(encoding='utf-8')
    section = text[text.index(f'    {first}:'):]
    section = section[:re.search(r'\n    [a-z]', section[1:]).start() + 1]
    comments = {}
    block_lines = []
    for line in section.splitlines()[1:]:
        match = re.match(r'^      ([a-z_]+):', line)
        if line.startswith('      #'):
            block_lines.append(line.strip().lstrip('#').strip())
        elif match:
            comments[match[1]] = ' '.join(block_lines)
            block_lines = []
    for spec in CAMERA_PARAMETERS:
        assert len(comments[spec.name]) > 10, f'multi_camera.yaml: {spec.name} has no comment'
        assert ('(runtime)' in comments[spec.name]) == (not spec.read_only), spec.name


def test_multi_camera_yaml():
    values = load_params_file(CONFIG / 'multi_camera.yaml')
    names = values['cameras']
    assert {k.split('.')[0] if '.' in k else k for k in values} <= PARAM_NAMES | set(names)
    merged = {**load_params_file(CONFIG / 'detector.yaml'), **values}
    params = NodeParams.from_dict(merged, 'multi_camera.yaml')
    assert [c.name for c in params.cameras] == ['front', 'left', 'right', 'rear']
    assert [c.input_topic for c in params.cameras] == [
        '/front/image_raw', '/left/image_raw/compressed', '/right/image_raw/compressed',
        '/rear/image_raw']
    assert params.max_batch == len(params.cameras)


# -- launch helpers (plain Python) -------------------------------------------------------------
def test_launch_cameras_from_the_argument_or_the_files():
    files = {**load_params_file(CONFIG / 'detector.yaml'),
             **load_params_file(CONFIG / 'multi_camera.yaml')}
    assert launch_cameras(files) == ['front', 'left', 'right', 'rear']
    assert launch_cameras(files, '[front, left]') == ['front', 'left']
    assert launch_cameras({}, 'front') == ['front']
    with pytest.raises(ConfigError, match='no cameras'):
        launch_cameras({})
    with pytest.raises(ConfigError, match=r"parameter cameras: 'front:/x' is the retired"):
        launch_cameras({}, '[front:/x]')
    with pytest.raises(ConfigError, match="parameter left.transport: 'zip' is not one of"):
        launch_cameras({'left.transport': 'zip'}, '[front, left]')


def test_node_parameters_keep_only_the_launched_cameras():
    files = load_params_file(CONFIG / 'multi_camera.yaml')
    values = node_parameters({**files, 'model': 'm.onnx'}, ['front', 'left'])
    assert values['cameras'] == ['front', 'left'] and values['model'] == 'm.onnx'
    assert not any(k.startswith(('right.', 'rear.')) for k in values)
    params = NodeParams.from_dict(values)
    assert [c.input_topic for c in params.cameras] == ['/front/image_raw',
                                                        '/left/image_raw/compressed']


def test_camera_node_parameters():
    """One node per camera in <namespace>/<NAME>: relative topics keep resolving in
    <namespace>, outputs go to the node namespace, other cameras' settings and QoS overrides
    stay out."""
    values = {**load_params_file(CONFIG / 'multi_camera.yaml'), 'conf_threshold': 0.3,
              'qos_overrides./robot/front/image_raw.subscription.reliability': 'reliable',
              'qos_overrides./robot/left/detections.publisher.depth': 5}
    del values['front.topic']  # default: front/image_raw, relative
    front = camera_node_parameters(values, 'front', 'robot')
    assert front['cameras'] == ['front'] and front['prefix_camera_name'] is False
    assert front['front.topic'] == '/robot/front/image_raw' and front['conf_threshold'] == 0.3
    assert 'qos_overrides./robot/front/image_raw.subscription.reliability' in front
    assert not any(k.startswith('qos_overrides./robot/left') for k in front)
    assert not any(k.startswith('left.') for k in front)
    left = camera_node_parameters(values, 'left', 'robot')
    assert left['left.topic'] == '/left/image_raw' and left['left.transport'] == 'compressed'
    assert 'qos_overrides./robot/left/detections.publisher.depth' in left
    (camera,) = NodeParams.from_dict(left).cameras
    assert (camera.detections_topic, camera.label_info_topic) == ('detections', 'label_info')


def test_rviz_config_for_the_launched_cameras(tmp_path):
    """rviz:=true: one Image display per launched camera, in the launch namespace, subscribing
    best effort (matches any publisher)."""
    data = yaml.safe_load(rviz_config_text(['front', 'arm_wrist'], 'robot1'))
    assert {'Panels', 'Visualization Manager', 'Window Geometry'} <= set(data)
    displays = data['Visualization Manager']['Displays']
    assert [d['Topic']['Value'] for d in displays] == [
        '/robot1/front/detections/image', '/robot1/arm_wrist/detections/image']
    assert {d['Class'] for d in displays} == {'rviz_default_plugins/Image'}
    assert {d['Topic']['Reliability Policy'] for d in displays} == {'Best Effort'}
    path = write_rviz_config(['cam'], '', tmp_path / 'x.rviz')
    topics = [d['Topic']['Value'] for d in
              yaml.safe_load(path.read_text())['Visualization Manager']['Displays']]
    assert topics == ['/cam/detections/image']


def _need_launch():
    # 'launch.actions', not 'launch': this repository's launch/ folder is importable as a
    # namespace package named 'launch' when the real one is absent.
    pytest.importorskip('launch.actions', reason='ROS 2 launch is not installed (a ROS 2 '
                                                 'package, not installable with pip here)')
    pytest.importorskip('launch_ros.actions', reason='ROS 2 launch_ros is not installed')


def _load_launch_module(name):
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('name', sorted(EXPECTED_ARGS))
def test_generate_launch_description(name):
    _need_launch()
    from launch.actions import DeclareLaunchArgument

    description = _load_launch_module(name).generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == set(_declared_arguments(LAUNCH / name))


def _multi_camera_actions(**configs):
    from launch import LaunchContext

    module = _load_launch_module('multi_camera.launch.py')
    context = LaunchContext()
    context.launch_configurations.update({
        'namespace': 'robot', 'cameras_file': str(CONFIG / 'multi_camera.yaml'),
        'params_file': str(CONFIG / 'detector.yaml'), 'node_per_camera': 'false',
        'model': '', 'backend': '', 'log_level': 'info', 'lifecycle': 'false',
        'autostart': 'true', 'use_sim_time': 'false', 'cameras': '', 'rviz': 'false',
        'rviz_config': '', **configs})
    return module._detectors(context)


def test_multi_camera_node_per_camera():
    _need_launch()
    from launch_ros.actions import Node

    for per_camera, count in (('false', 1), ('true', 4)):
        actions = _multi_camera_actions(node_per_camera=per_camera)
        assert len(actions) == count
        assert all(type(a) is Node for a in actions)
    actions = _multi_camera_actions(node_per_camera='true', cameras='[front, left]')
    assert len(actions) == 2


@pytest.mark.parametrize('per_camera', ['false', 'true'])
def test_rviz_generated_for_the_launched_cameras(per_camera):
    _need_launch()
    from launch_ros.actions import Node

    actions = _multi_camera_actions(rviz='true', cameras='[front, left]',
                                    node_per_camera=per_camera)
    (rviz,) = [a for a in actions if isinstance(a, Node) and a.node_executable == 'rviz2']
    words = [getattr(sub, 'text', '') for part in rviz.cmd for sub in part]
    path = Path(words[words.index('-d') + 1])
    displays = yaml.safe_load(path.read_text())['Visualization Manager']['Displays']
    assert [d['Topic']['Value'] for d in displays] == ['/robot/front/detections/image',
                                                       '/robot/left/detections/image']
    path.unlink()


@pytest.mark.parametrize('autostart', ['true', 'false'])
@pytest.mark.parametrize('per_camera', ['false', 'true'])
def test_lifecycle_nodes_and_autostart(autostart, per_camera):
    """lifecycle:=true starts managed nodes (detector_node --lifecycle); autostart:=true adds
    per node a configure event and a handler activating it once inactive."""
    _need_launch()
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode

    actions = _multi_camera_actions(lifecycle='true', autostart=autostart,
                                    node_per_camera=per_camera, use_sim_time='true')
    nodes = [a for a in actions if isinstance(a, LifecycleNode)]
    assert len(nodes) == (4 if per_camera == 'true' else 1)
    for node in nodes:
        words = [getattr(sub, 'text', '') for part in node.cmd for sub in part]
        assert '--lifecycle' in words and node.node_executable == 'detector_node'
    events = [a for a in actions if isinstance(a, EmitEvent)]
    handlers = [a for a in actions if isinstance(a, RegisterEventHandler)]
    expected = len(nodes) if autostart == 'true' else 0
    assert (len(events), len(handlers)) == (expected, expected)


def test_launch_arguments_of_the_node():
    from darknet53_ros.ros.launching import is_true, node_arguments

    assert node_arguments(True, 'warn') == ['--lifecycle', '--ros-args', '--log-level', 'warn']
    assert node_arguments(False, 'info')[0] == '--ros-args'
    assert is_true(' True') and not is_true('false') and not is_true('')
