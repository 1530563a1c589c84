"""Tests for darknet53_ros.model.cfg: parsing, shape inference, counts and errors."""
from __future__ import annotations

import pytest

from darknet53_ros.errors import DarknetError
from darknet53_ros.model.cfg import load_cfg, parse_cfg
from darknet53_ros.model.generator import yolov3_cfg
from darknet53_ros.model.layers import Convolutional, Maxpool, Route, Shortcut, Yolo

from ..hypo import HealthCheck, given, settings, st

TINY_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58
classes=2
num=3
"""


def test_official_yolov3_shapes_and_counts(yolov3_cfg_path):
    net = load_cfg(yolov3_cfg_path, 416, 416)
    assert len(net.layers) == 107
    heads = net.yolo_layers()
    assert [h.index for h in heads] == [82, 94, 106]
    assert [h.out_shape for h in heads] == [(255, 13, 13), (255, 26, 26), (255, 52, 52)]
    assert heads[0].masked_anchors == ((116, 90), (156, 198), (373, 326))
    # Darknet prints 65.864 BFLOPs for yolov3 at 416; the published yolov3.weights file has
    # 248,007,048 bytes = 20-byte header + 62,001,757 float32 parameters.
    assert net.bflops == pytest.approx(65.86, rel=0.005)
    assert net.num_params == 62_001_757


def test_official_tiny_and_classifier(tiny_cfg_path, darknet53_cfg_path):
    tiny = load_cfg(tiny_cfg_path)
    assert tiny.num_params == 8_858_734  # yolov3-tiny.weights: 35,434,956 bytes
    assert tiny.bflops == pytest.approx(5.56, rel=0.005)
    pool = tiny.layers[11]
    assert isinstance(pool, Maxpool) and (pool.size, pool.stride) == (2, 1)
    assert pool.out_shape == pool.in_shape == (512, 13, 13)
    route = tiny.layers[20]
    assert isinstance(route, Route) and route.sources == (19, 8)
    classifier = load_cfg(darknet53_cfg_path)
    assert classifier.classes == 0 and classifier.layers[-1].out_shape == (1000, 1, 1)
    convs = [layer for layer in classifier.layers if isinstance(layer, Convolutional)]
    assert len(convs) == 53
    assert sum(isinstance(layer, Shortcut) for layer in classifier.layers) == 23


def test_rectangular_and_override_sizes():
    net = parse_cfg(yolov3_cfg(classes=3), width=608, height=352)
    assert [h.in_shape[1:] for h in net.yolo_layers()] == [(11, 19), (22, 38), (44, 76)]
    assert net.with_input_size(320, 320).yolo_layers()[0].in_shape == (24, 10, 10)
    assert net.classes == 3


def test_relative_and_absolute_routes():
    net = parse_cfg(yolov3_cfg())
    route = net.layers[86]
    assert isinstance(route, Route) and route.sources == (85, 61)
    assert route.out_shape == (768, 26, 26)


def test_groups_route_and_spp_maxpool():
    text = TINY_CFG.split('[yolo]')[0].replace('filters=21', 'filters=16') + """
[route]
layers=-1
groups=2
group_id=1

[maxpool]
size=5
stride=1

[route]
layers=-1,-2
"""
    net = parse_cfg(text)
    assert net.layers[3].out_shape == (8, 32, 32)
    assert net.layers[4].out_shape == (8, 32, 32)
    assert net.layers[5].out_shape == (16, 32, 32)


@pytest.mark.parametrize('edit, needle', [
    (('[maxpool]', '[dropout_x]'), 'unsupported section [dropout_x]'),
    (('size=3', 'size=three'), "key 'size': expected an integer"),
    (('activation=leaky', 'activation=gelu'), 'unsupported activation'),
    (('filters=21', 'filters=20'), 'len(mask) * (5 + classes)'),
    (('stride=2', 'stride=2\nbogus=1'), "key 'bogus': unknown key"),
    (('mask = 0,1,2', 'mask = 0,1,5'), 'distinct anchor indices'),
    (('anchors = 10,14,  23,27,  37,58', 'anchors = 10,14,  23,27,  37'), 'pairs'),
    (('size=3', 'size=65535'), ":9: [convolutional] key 'size': kernel size 65535"),
    (('channels=3\n', 'channels=65536\n[convolutional]\nfilters=65536\n'),
     "key 'filters': 65536 filters of 65536x1x1 are over"),
    (('width=64\nheight=64', 'width=65536\nheight=65536'),
     'output shape (C, H, W) = (8, 65536, 65536) is too large'),
    (('[net]', '[convolutional]\nfilters=2\n[net]'), 'first section must be [net]'),
])
def test_errors_name_file_line_and_key(edit, needle):
    text = TINY_CFG.replace(*edit)
    with pytest.raises(DarknetError) as info:
        parse_cfg(text, source='model.cfg')
    message = str(info.value)
    assert needle in message
    assert message.startswith('model.cfg')


def test_bad_references_and_shapes():
    base = TINY_CFG.split('[yolo]')[0]
    with pytest.raises(DarknetError, match='not an earlier layer'):
        parse_cfg(base + '[route]\nlayers=5\n', source='a.cfg')
    with pytest.raises(DarknetError, match='shapes differ'):
        parse_cfg(base + '[shortcut]\nfrom=-3\n', source='a.cfg')
    with pytest.raises(DarknetError, match='differ in height/width'):
        parse_cfg(base + '[route]\nlayers=-1,0\n', source='a.cfg')
    with pytest.raises(DarknetError, match='too small'):
        parse_cfg(TINY_CFG.replace('pad=1', 'pad=0', 1), width=2, height=2)
    with pytest.raises(DarknetError, match='not found'):
        load_cfg('/nonexistent/x.cfg')


def test_comments_and_whitespace_are_ignored():
    text = '# comment\n\n' + TINY_CFG.replace('filters=8', ' filters = 8 ; trailing?')
    with pytest.raises(DarknetError):
        parse_cfg(text)  # "8 ; trailing?" is not an integer
    net = parse_cfg('; header comment\n' + TINY_CFG.replace('size=3', '  size = 3  '))
    assert isinstance(net.layers[-1], Yolo)


_LINES = TINY_CFG.splitlines() + yolov3_cfg(classes=2, width=64, height=64).splitlines()[:80]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.sampled_from(_LINES),
    st.text(alphabet='[]=,-#;0123456789abcdefilmnoprstuvwxyz_ .\t', max_size=20)),
    max_size=60))
def test_mangled_cfg_raises_only_darknet_error(lines):
    try:
        parse_cfg('\n'.join(lines), source='fuzz.cfg')
    except DarknetError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(TINY_CFG) - 1), st.text(max_size=5))
def test_character_edits_raise_only_darknet_error(position, insert):
    text = TINY_CFG[:position] + insert + TINY_CFG[position + 1:]
    try:
        parse_cfg(text, source='fuzz.cfg')
    except DarknetError:
        pass


def test_repeated_keys_keep_the_first_value_and_warn_once(caplog):
    """Issue 13.10: Darknet's option lookup takes the first occurrence (Testing/Training)."""
    text = TINY_CFG.replace('[net]\n', '[net]\n# Testing\nbatch=1\nsubdivisions=1\n'
                            '# Training\nbatch=64\nsubdivisions=16\n')
    with caplog.at_level('WARNING', logger='darknet53_ros.model.cfg'):
        net = parse_cfg(text, source='public.cfg')
    assert net.options['batch'] == '1' and net.options['subdivisions'] == '1'
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith('public.cfg: repeated keys')
    assert "line 6 [net] 'batch' (first at line 3)" in warnings[0]
    assert "line 7 [net] 'subdivisions' (first at line 4)" in warnings[0]
    assert parse_cfg(TINY_CFG.replace('size=3', 'size=3\nsize=5')).layers[0].size == 3


def test_unbuildable_sizes_are_refused_before_allocating():
    """Issue 13.8: size=65535 filters=65536 parsed (8e14 parameters) and died in NumPy."""
    text = TINY_CFG.replace('size=3', 'size=65535').replace('filters=8', 'filters=65536')
    with pytest.raises(DarknetError, match=r"model.cfg:9: \[convolutional\] key 'size'"):
        parse_cfg(text, source='model.cfg')
    layers = '[convolutional]\nfilters=1024\nsize=16\npad=1\n' * 5
    with pytest.raises(DarknetError, match='the network exceeds 1073741824 parameters'):
        parse_cfg('[net]\nwidth=64\nheight=64\nchannels=1024\n' + layers)
