"""Tests for the cfg / info / export subcommands of the ``darknet53`` command line."""
from __future__ import annotations

from darknet53_ros.cli.main import main
from darknet53_ros.model.cfg import load_cfg, parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.weights import random_weights, write_weights

from ..conftest import optional_module, requires

pytestmark = requires('onnx')
onnx = optional_module('onnx')


def test_cfg_prints_generated_cfg(capsys):
    assert main(['cfg', '--classes', '3', '--width', '320', '--height', '256']) == 0
    out = capsys.readouterr().out
    assert out == yolov3_cfg(classes=3, width=320, height=256)


def test_cfg_writes_file_and_classifier(tmp_path):
    out = tmp_path / 'd53.cfg'
    assert main(['cfg', '--classifier', '--width', '256', '--height', '256', '-o',
                 str(out)]) == 0
    assert load_cfg(out).layers[-1].out_shape == (1000, 1, 1)


def test_info_table(tmp_path, capsys):
    cfg = tmp_path / 'y.cfg'
    cfg.write_text(yolov3_cfg())
    assert main(['info', str(cfg)]) == 0
    out = capsys.readouterr().out
    assert 'Total: 107 layers, 62,001,757 parameters, 65.864 BFLOPs' in out
    assert '  105  conv' in out and '  106  yolo' in out


def test_export_with_weights_and_names(tmp_path, capsys):
    cfg = tmp_path / 's.cfg'
    cfg.write_text(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125))
    net = load_cfg(cfg)
    weights = tmp_path / 's.weights'
    write_weights(weights, net, random_weights(net))
    names = tmp_path / 's.names'
    names.write_text('cone\nball\n\n')
    out = tmp_path / 's.onnx'
    assert main(['export', '--cfg', str(cfg), '--weights', str(weights), '--names', str(names),
                 '--width', '96', '--height', '64', '--raw', '-o', str(out)]) == 0
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ['boxes', 'scores', 'head_81', 'head_93',
                                                    'head_105']
    assert model.graph.input[0].type.tensor_type.shape.dim[3].dim_value == 96


def test_export_bad_weights_is_a_clear_error(tmp_path, caplog):
    cfg = tmp_path / 's.cfg'
    cfg.write_text(yolov3_cfg(classes=2, width=64, height=64, width_multiplier=0.125))
    bad = tmp_path / 'bad.weights'
    bad.write_bytes(b'\0' * 100)
    out = tmp_path / 'x.onnx'
    assert main(['export', '--cfg', str(cfg), '--weights', str(bad), '-o', str(out)]) == 2
    assert 'bad.weights' in caplog.text and 'truncated' in caplog.text
    assert not out.exists()
    assert parse_cfg(cfg.read_text()).classes == 2
