"""Tests for darknet53_ros.model.generator: the seed's Darknet-53 / YOLOv3 as cfg text."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from darknet53_ros.errors import ConfigError
from darknet53_ros.model.cfg import Network, load_cfg, parse_cfg
from darknet53_ros.model.generator import (
    STAGE_BLOCKS,
    STAGE_FILTERS,
    darknet53_classifier_cfg,
    yolov3_cfg,
)
from darknet53_ros.model.layers import Convolutional, Shortcut


def _same_layers(a: Network, b: Network) -> None:
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        fields_x = {k: v for k, v in asdict(x).items() if k != 'line'}
        fields_y = {k: v for k, v in asdict(y).items() if k != 'line'}
        assert type(x) is type(y) and fields_x == fields_y, (x, y)


def test_default_yolov3_matches_official_cfg(yolov3_cfg_path):
    official = load_cfg(yolov3_cfg_path)
    _same_layers(parse_cfg(yolov3_cfg(width=official.width, height=official.height)), official)


def test_classifier_matches_official_darknet53(darknet53_cfg_path):
    official = load_cfg(darknet53_cfg_path)
    _same_layers(parse_cfg(darknet53_classifier_cfg(width=256, height=256)), official)


def test_backbone_is_darknet53_as_published():
    net = parse_cfg(yolov3_cfg())
    backbone = net.layers[:75]
    convs = [layer for layer in backbone if isinstance(layer, Convolutional)]
    assert len(convs) == 52 and convs[0].filters == 32
    assert all(c.batch_normalize and c.activation == 'leaky' for c in convs)
    downsamples = [c for c in convs if c.stride == 2]
    assert [c.filters for c in downsamples] == list(STAGE_FILTERS)
    shortcuts = [layer for layer in backbone if isinstance(layer, Shortcut)]
    assert len(shortcuts) == sum(STAGE_BLOCKS) == 23
    assert all(s.source == s.index - 3 and s.activation == 'linear' for s in shortcuts)
    assert backbone[-1].out_shape == (1024, 13, 13)


def test_options_change_the_model():
    net = parse_cfg(yolov3_cfg(classes=4, width=320, height=256, width_multiplier=0.25,
                               anchors=[(i + 1, i + 2) for i in range(9)]))
    assert net.classes == 4
    assert [h.out_shape for h in net.yolo_layers()] == [(27, 8, 10), (27, 16, 20),
                                                        (27, 32, 40)]
    assert net.layers[0].filters == 8 and net.layers[73].filters == 256
    assert net.yolo_layers()[2].masked_anchors == ((1, 2), (2, 3), (3, 4))
    assert net.num_params < parse_cfg(yolov3_cfg(classes=4)).num_params / 10


@pytest.mark.parametrize('kwargs', [{'classes': 0}, {'width': 100}, {'height': 0},
                                    {'width_multiplier': 0}, {'anchors': [(1, 1)] * 6}])
def test_invalid_options(kwargs):
    with pytest.raises(ConfigError):
        yolov3_cfg(**kwargs)
