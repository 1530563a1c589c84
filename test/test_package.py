"""The package as a robot installs it: package.xml against the imports, the robot profile's
package list, console scripts under colcon and pip, and the runtime without ONNX."""
from __future__ import annotations

import ast
import os
from pathlib import Path
import re
import runpy
import subprocess
import sys
import textwrap
from typing import Any
import xml.etree.ElementTree as ET

import pytest

from .conftest import requires
from .robot_profile import RECIPE_MARK, ROSDEP_PIP, python_keys, recipe_extras, requirements

ROOT = Path(__file__).resolve().parents[1]
#: ROS packages imported by name (besides every ``*_msgs`` / ``*_interfaces`` package).
ROS_PACKAGES = {'rclpy', 'launch', 'launch_ros', 'launch_testing', 'launch_testing_ros',
                'ament_index_python', 'bondpy', 'rosidl_runtime_py', 'diagnostic_updater',
                'tf2_ros', 'message_filters', 'cv_bridge', 'image_transport', 'rosbag2_py'}


def _depends(*tags: str) -> set[str]:
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {(dep.text or '').strip() for tag in tags for dep in root.iter(tag)}


def _ros_imports(*folders: str) -> dict[str, str]:
    """ROS package -> first ``file:line`` importing it, over the .py files of ``folders``."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob('*.py')):
            tree = ast.parse(path.read_text(encoding='utf-8'))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split('.')[0]
                    if top in ROS_PACKAGES or re.search(r'_(msgs|interfaces)$', top):
                        found.setdefault(top, f'{path.relative_to(ROOT)}:{node.lineno}')
    return found


def test_package_xml_declares_every_ros_package_the_code_imports() -> None:
    runtime = _depends('exec_depend', 'depend')
    missing = {pkg: where for pkg, where in _ros_imports('darknet53_ros', 'launch').items()
               if pkg not in runtime}
    assert missing == {}, 'add <exec_depend> to package.xml'


def test_package_xml_declares_every_ros_package_the_tests_import() -> None:
    declared = _depends('exec_depend', 'depend', 'test_depend')
    missing = {pkg: where for pkg, where in _ros_imports('test').items()
               if pkg not in declared}
    assert missing == {}, 'add <test_depend> to package.xml'


def test_import_scan_sees_messages_and_ros_packages() -> None:
    found = _ros_imports('darknet53_ros')
    assert {'rclpy', 'vision_msgs', 'sensor_msgs', 'builtin_interfaces'} <= set(found)


def test_robot_profile_covers_every_python_rosdep_key() -> None:
    keys = python_keys()
    assert keys, 'package.xml has no python3-* rosdep keys'
    assert sorted(ROSDEP_PIP) == keys, 'test/robot_profile.py ROSDEP_PIP != package.xml keys'


def test_robot_profile_reads_the_readme_recipe() -> None:
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert RECIPE_MARK in readme
    extras = recipe_extras()
    assert 'onnx' in extras  # build-engine reads the ONNX metadata
    assert not {'rosbags', 'hypothesis', 'torch', 'tqdm', 'mcap'} & set(extras)
    assert requirements()[:len(ROSDEP_PIP)] == [ROSDEP_PIP[k] for k in python_keys()]


def _setup_kwargs(monkeypatch: pytest.MonkeyPatch, pythonpath: str) -> dict[str, Any]:
    import setuptools

    captured: dict[str, Any] = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: captured.update(kw))
    monkeypatch.setenv('PYTHONPATH', pythonpath)
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / 'setup.py'), run_name='__main__')
    return captured


def test_console_scripts_go_to_lib_under_colcon_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """colcon: lib/darknet53_ros (``ros2 run``); pip (any Python): the environment's bin/."""
    colcon = os.pathsep.join(['/ws/build/darknet53_ros/prefix_override',
                              '/usr/lib/python3/dist-packages/colcon_core/task/python/'
                              'colcon_distutils_commands', '/ws/install/lib/python3/site'])
    options = _setup_kwargs(monkeypatch, colcon)['options']
    assert options == {'develop': {'script_dir': '$base/lib/darknet53_ros'},
                       'install': {'install_scripts': '$base/lib/darknet53_ros'}}
    assert _setup_kwargs(monkeypatch, '/opt/ros/humble/lib/python3.10/site-packages')[
        'options'] == {}
    scripts = _setup_kwargs(monkeypatch, '')['entry_points']['console_scripts']
    assert {s.split('=')[0].strip() for s in scripts} >= {'darknet53', 'detector_node'}


def test_setup_cfg_has_no_script_location() -> None:
    """pip on Python 3.8/3.9 reads setup.cfg's [install] from the working directory."""
    text = (ROOT / 'setup.cfg').read_text(encoding='utf-8')
    assert not re.search(r'^\s*(install[-_]scripts|script[-_]dir)\s*=', text, re.M)


NO_ONNX = textwrap.dedent("""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == 'onnx' or name.startswith('onnx.'):
                raise ModuleNotFoundError("No module named 'onnx'", name='onnx')

    sys.meta_path.insert(0, Block())
    import numpy as np
    import darknet53_ros.cli.main, darknet53_ros.ros.node, darknet53_ros.ros.lifecycle_node
    import darknet53_ros.tools.replay, darknet53_ros.tools.runner
    import darknet53_ros.optimize.engine_builder
    from darknet53_ros.errors import ModelError
    from darknet53_ros.ros.model_files import load_detector
    from darknet53_ros.ros.params import NodeParams

    detector, path = load_detector(NodeParams.from_dict({'model': sys.argv[1]}), share_dir=False)
    print('boxes', len(detector.detect(np.zeros((48, 64, 3), np.uint8)).boxes))
    detector.close()
    try:
        load_detector(NodeParams(), share_dir=False, cache_dir=sys.argv[2])
    except ModelError as exc:
        print('refused', exc)
    assert 'onnx' not in sys.modules
""")


@requires('onnxruntime')
def test_runtime_runs_onnx_models_without_the_onnx_package(planted_model: Path,
                                                          tmp_path: Path) -> None:
    """The node's path and the runtime commands need no ``onnx`` for .onnx/.engine models; a
    .cfg model (the bundled demo) is refused in one line naming the package to install."""
    script = tmp_path / 'no_onnx.py'
    script.write_text(NO_ONNX, encoding='utf-8')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(ROOT), os.environ.get('PYTHONPATH', '')])}
    done = subprocess.run([sys.executable, str(script), str(planted_model), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith('boxes ')
    refused = [line for line in lines if line.startswith('refused')]
    assert len(refused) == 1 and 'demo.cfg' in refused[0]
    assert 'python3 -m pip install onnx' in refused[0]
