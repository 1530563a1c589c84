"""The command line's failure contract: one ``ERROR darknet53: ...`` line, exit 2 (issue 13)."""
from __future__ import annotations

import logging
import sys

import pytest

from darknet53_ros.cli.main import main
from darknet53_ros.model.generator import yolov3_cfg

from ..conftest import requires

SMALL = yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125)


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@requires('onnx')
def test_output_path_that_is_a_folder_is_one_error_line(tmp_path, caplog):
    """Issue 13.2: ``export -o dir.onnx`` gave an IsADirectoryError traceback."""
    cfg = tmp_path / 'small.cfg'
    cfg.write_text(SMALL)
    target = tmp_path / 'dir.onnx'
    target.mkdir()
    assert main(['export', '--cfg', str(cfg), '--random-weights', '0', '-o', str(target)]) == 2
    assert _errors(caplog) == [f'{target}: is a folder, expected a file path']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['dir.onnx', 'small.cfg']
    assert list(target.iterdir()) == []


@pytest.mark.parametrize('argv, module, extra', [
    (['replay', '--bag', 'b', '--output', 'o'], 'rosbags', 'bags'),
    (['bench', '--plot', 'p.png', '--sizes', 'none'], 'matplotlib', 'eval'),
    (['eval', '--model', 'm.onnx', '--data', 'd'], 'pycocotools', 'eval'),
    pytest.param(['train', '--cfg', 'c', '--data', 'd', '-o', 'o.weights'], 'torch', 'train',
                 marks=pytest.mark.skipif(sys.version_info < (3, 10),
                                          reason='training first says it needs Python 3.10+')),
    pytest.param(['synth', '--bag', 'b'], 'cv2', 'cpu', marks=requires('rosbags')),
])
def test_missing_optional_dependency_names_the_extra(argv, module, extra, monkeypatch, caplog):
    """Issue 13.9: checked before the command starts; the message says what to install."""
    monkeypatch.setitem(sys.modules, module, None)
    from darknet53_ros.tools import bench

    monkeypatch.setattr(bench, 'run_bench', lambda *a, **k: pytest.fail('benchmark ran'))
    assert main(argv) == 2
    (line,) = _errors(caplog)
    assert f'darknet53 {argv[0]} needs {module}' in line
    assert f"pip install 'darknet53_ros[{extra}]'" in line


@requires('rosbags', 'cv2')
def test_existing_output_message_names_the_cli_flag(tmp_path, caplog):
    """Issue 13.11: messages said ``overwrite=False`` instead of ``--overwrite``."""
    (tmp_path / 'bag').mkdir()
    assert main(['synth', '--bag', str(tmp_path / 'bag'), '--frames', '1']) == 2
    (line,) = _errors(caplog)
    assert '--overwrite' in line and 'overwrite=' not in line


@pytest.mark.parametrize('command', ['train', 'study'])
def test_training_commands_refuse_old_pythons_first(command, monkeypatch, caplog):
    """Python 3.8 (JetPack 5) runs the runtime only: training says so in one line, first."""
    from darknet53_ros import errors

    monkeypatch.setattr(errors.sys, 'version_info', (3, 8, 18, 'final', 0))
    argv = [command, '--data', 'nowhere'] if command == 'train' else [command]
    if command == 'train':
        argv += ['--cfg', 'x.cfg', '-o', 'out']
    assert main(argv) == 2
    assert f'darknet53 {command} needs Python 3.10+ (this is Python 3.8.18)' in caplog.text


@pytest.mark.parametrize('argv', [
    ['build-engine', '--model', 'm.onnx', '-o', 'm.engine'],
    ['export', '--cfg', 'c.cfg', '--random-weights', '0', '-o', 'c.onnx'],
])
def test_missing_onnx_names_the_package(argv, monkeypatch, caplog):
    """A colcon-built robot has no onnx (no rosdep key): the commands that need it say what to
    pip-install before any work; ``detect`` and the node do not need it."""
    monkeypatch.setitem(sys.modules, 'onnx', None)
    assert main(argv) == 2
    (line,) = _errors(caplog)
    assert line.endswith(f'darknet53 {argv[0]} needs onnx, which is not installed: '
                         'pip install onnx')
