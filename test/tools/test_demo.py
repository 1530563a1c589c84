"""The README's main job: bundled demo model on a synthetic two-camera recording."""
import hashlib
import json

from darknet53_ros.cli.main import main
from darknet53_ros.io.bags import BagReader, detections_topic

from ..conftest import optional_module, requires

# darknet53 demo exports the bundled cfg to ONNX: its module needs onnx (no rosdep key).
demo = optional_module('darknet53_ros.tools.demo')
pytestmark = requires('onnx')


def test_bundled_model_matches_its_manifest():
    cfg, weights, names = demo.demo_model_files()
    manifest = json.loads((demo.MODELS_DIR / 'demo.json').read_text())
    for path in (cfg, weights):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest['sha256'][path.name]
    assert names.read_text().split() == manifest['classes']
    assert weights.stat().st_size <= 20 * 1024 * 1024


@requires('rosbags')
def test_demo_command_detects_and_writes_a_detections_bag(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['demo', '--output', str(out), '--no-progress']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['processed'] == 20 and summary['failed'] == 0
    # The trained model finds objects in synthetic scenes (they hold 1-8 objects each).
    assert summary['detections'] >= 20
    coco = json.loads((out / 'detections.json').read_text())
    assert len(coco) == summary['detections']
    with BagReader(out / 'cameras_detections') as reader:
        topics = reader.topics
        for camera in ('/front/image_raw', '/left/image_raw/compressed'):
            topic = detections_topic(camera)
            assert topics[topic].msgtype == 'vision_msgs/msg/Detection2DArray'
            assert topics[topic].count == 10
    assert 'demo model' in capsys.readouterr().out
