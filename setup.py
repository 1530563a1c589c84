"""Install darknet53_ros as an ament_python package (colcon) or a plain pip package."""
from glob import glob
import os
import re

from setuptools import find_packages, setup

PACKAGE = 'darknet53_ros'


def _version() -> str:
    """The one version, from package.xml (as darknet53_ros/version.py reads it)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'package.xml')) as f:
        match = re.search(r'<version>\s*([^<\s]+)\s*</version>', f.read())
    if match is None:
        raise RuntimeError('package.xml has no <version>')
    return match.group(1)


# The runtime (node, detect, replay, quantize, build-engine) supports Python 3.8 (JetPack 5.1,
# Ubuntu 20.04), 3.10 (JetPack 6) and 3.12 (JetPack 7); lower bounds admit the last releases
# that support 3.8 (numpy 1.24, onnx 1.17, onnxruntime 1.19, OpenCV 4.x). Training, studies and
# plots need Python 3.10+ (their extra is empty on older Pythons; the commands say so).
TRAINING = "; python_version >= '3.10'"

EXTRAS = {
    # ONNX Runtime backend and OpenCV (< 5: OpenCV 5 dropped the Darknet importer the tests use
    # as an independent reference). On a robot, python3-opencv from apt serves instead.
    # SciPy: the tracker's assignment (the node's NAME.tracking, tracker_node); a rosdep key.
    'cpu': ['onnxruntime>=1.16', 'opencv-python-headless>=4.8,<5', 'scipy>=1.7'],
    # rosbag2 (MCAP / SQLite3) reading and writing without ROS.
    'bags': ['rosbags>=0.9.23', 'rosbags-image>=0.9', 'mcap>=1.1', 'tqdm>=4.60'],
    # Training, evaluation and plots (Python 3.10+).
    'train': [dep + TRAINING for dep in ('torch>=2.1', 'pycocotools>=2.0.7',
                                         'matplotlib>=3.7', 'tqdm>=4.60')],
    # darknet53 detect --fleet: many recordings on Ray Data, locally or on a cluster (Python
    # 3.10+; its extra is empty on older Pythons and the command says so). doc/fleet.md.
    'fleet': [dep + TRAINING for dep in ('ray[data]>=2.40', 'pyarrow>=14', 'rosbags>=0.10',
                                         'rosbags-image>=0.9', 'mcap>=1.1')],
    # Evaluation only (darknet53 eval: COCO mAP and the PR-curve plot), without PyTorch.
    'eval': ['pycocotools>=2.0.7', 'matplotlib>=3.7', 'opencv-python-headless>=4.8,<5'],
    # Jetson / NVIDIA GPU runtime: TensorRT comes with JetPack (python3-libnvinfer) or NVIDIA's
    # packages. CUDA 13 (JetPack 7) needs pycuda >= 2025.1.2; markers cannot see the CUDA
    # version, so the runtime checks it (darknet53_ros/inference/backends/cuda_pycuda.py).
    'tensorrt': ['pycuda>=2022.1'],
    # NVIDIA's cuda-python instead of pycuda (--cuda-runtime cuda-python): install the release
    # matching the CUDA major version (JetPack 5: <12, JetPack 6: 12.x, JetPack 7: 13.x).
    'cuda-python': ['cuda-python>=11.8'],
    # Tracking (darknet53_ros.tracking, darknet53 track, the node's `tracking` parameter): the
    # assignment solver. On a robot python3-scipy (rosdep key in package.xml) serves; lapx is an
    # optional alternative solver (same results).
    'track': ['scipy>=1.3'],
    # darknet53 track-eval: TrackEval's HOTA/CLEAR/Identity (its wheel pulls OpenCV 5: use a
    # venv, or pip install --no-deps trackeval tabulate beside OpenCV 4).
    'track-eval': ['trackeval>=1.3', 'scipy>=1.3'],
    'test': [
        'pytest>=7', 'hypothesis>=6.80', 'pytest-benchmark>=4', 'ruff>=0.5', 'mypy>=1.8',
        'colcon-core>=0.15', 'colcon-ros>=0.4', 'pyyaml>=6',
    ],
    # Type stubs for the TensorRT glue: install with `pip install --no-deps tensorrt-stubs`
    # (its dependency, the tensorrt wheel, is served only from NVIDIA's index).
}
EXTRAS['all'] = sorted({dep for name in ('cpu', 'bags', 'train', 'track', 'test', 'fleet')
                       for dep in EXTRAS[name]})


def _script_options() -> dict:
    """Where colcon puts the console scripts: ``lib/darknet53_ros``, where ``ros2 run`` looks.

    Only under colcon (its build puts ``colcon_distutils_commands`` on PYTHONPATH). The usual
    ament_python ``setup.cfg`` (``[install] install_scripts``) cannot be used: pip on Python
    3.8/3.9 reads that file from the working directory for its own install scheme, and then
    ``pip install -e .`` run in the checkout hides ``darknet53`` (and anything else it
    installs there) in ``<env>/lib/darknet53_ros`` instead of ``<env>/bin``.
    """
    entries = os.environ.get('PYTHONPATH', '').split(os.pathsep)
    if not any(os.path.basename(entry.rstrip('/\\')) == 'colcon_distutils_commands'
               for entry in entries):
        return {}
    scripts = f'$base/lib/{PACKAGE}'
    return {'develop': {'script_dir': scripts}, 'install': {'install_scripts': scripts}}


def _data_files() -> list:
    files = [
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', sorted(glob('launch/*.launch.py'))),
        (f'share/{PACKAGE}/config', sorted(f for f in glob('config/*') if os.path.isfile(f))),
        (f'share/{PACKAGE}/engines', ['engines/README.md']),
    ]
    return [(dest, srcs) for dest, srcs in files if srcs]


setup(
    name=PACKAGE,
    version=_version(),
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['msg/*.msg', 'models/*.cfg', 'models/*.weights', 'models/*.names',
                            'models/*.json', 'inference/backends/*.cu']},
    data_files=_data_files(),
    python_requires='>=3.8',
    install_requires=['setuptools', 'numpy>=1.23', 'onnx>=1.14', 'pyyaml>=5.4'],
    extras_require=EXTRAS,
    zip_safe=False,
    options=_script_options(),
    maintainer='darknet53_ros maintainers',
    maintainer_email='maintainers@darknet53-ros.invalid',
    description='Darknet-53 / YOLOv3 detection for ROS 2 with ONNX Runtime and INT8 TensorRT',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'darknet53 = darknet53_ros.cli.main:main',
            'detector_node = darknet53_ros.ros.node:main',
            'tracker_node = darknet53_ros.ros.tracker_node:main',
        ],
    },
)
