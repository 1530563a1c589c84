"""Sphinx configuration of the darknet53_ros documentation.

Two ways to build it, with the same result (``.ci/run`` runs the first with warnings as
errors, see doc/development.md):

- ``rosdoc2 build --package-path .``, as docs.ros.org does: rosdoc2 copies ``doc/`` into its
  build folder and runs a generated ``conf.py`` there that executes this file, then adds its
  own settings (theme, autodoc, intersphinx, MyST);
- ``sphinx-build -W doc <output folder>``: this file alone.

The pages are Markdown (MyST). The reference pages are generated from the code at build time
by ``doc/_ext/darknet53_docs.py``; the Python API pages by autosummary/autodoc from the
docstrings (Google style, read by napoleon).
"""
import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _package_root():
    """The package checkout: the folder above ``doc/``; under rosdoc2, whose generated
    ``conf.py`` runs ``exec(open("<package>/doc/conf.py").read())``, the folder that names."""
    if os.environ.get('DARKNET53_ROS_ROOT'):
        return os.path.abspath(os.environ['DARKNET53_ROS_ROOT'])
    parent = os.path.dirname(_HERE)
    if os.path.isfile(os.path.join(parent, 'package.xml')):
        return parent
    with open(os.path.abspath(__file__), encoding='utf-8') as wrapper:
        match = re.search(r'exec\(open\("(.+?)"\)\.read\(\)\)', wrapper.read())
    if match is None:
        raise RuntimeError(f'doc/conf.py: cannot find the package from {_HERE}; set '
                           'DARKNET53_ROS_ROOT to the checkout')
    return os.path.dirname(os.path.dirname(os.path.abspath(match.group(1))))


darknet53_root = _package_root()
sys.path.insert(0, darknet53_root)
sys.path.insert(0, os.path.join(darknet53_root, 'doc', '_ext'))

with open(os.path.join(darknet53_root, 'package.xml'), encoding='utf-8') as _xml:
    release = re.search(r'<version>\s*([^<\s]+)\s*</version>', _xml.read()).group(1)
version = '.'.join(release.split('.')[:2])
project = 'darknet53_ros'
author = 'darknet53_ros maintainers'
copyright = 'darknet53_ros maintainers; Apache-2.0'

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx_rtd_theme',
    'darknet53_docs',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = master_doc = 'index'
exclude_patterns = [
    '_build', '_ext', '_readme.md', 'study/study.md',
    # rosdoc2's own pages (this site has its own index, API pages and front page)
    'sphinx_output', 'user_docs', 'user_docs*.rst', 'standard_docs', 'standards.rst',
    '__readme_include.rst', 'modules.rst', 'darknet53_ros.rst', 'darknet53_ros.*.rst',
    'interfaces', 'generated',
]
templates_path = []

# MyST: heading anchors for [text](page.md#heading) links, as GitHub makes them.
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

# Python API (docstrings are Google style). Optional and ROS-only imports are mocked, so the
# docs build needs neither ROS 2 nor PyTorch, TensorRT, ONNX or OpenCV.
autosummary_generate = True
autodoc_default_options = {'members': True, 'show-inheritance': True,
                           'ignore-module-all': True}
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
darknet53_mock_imports = [
    'cv2', 'onnx', 'onnxruntime', 'tensorrt', 'pycuda', 'cuda', 'cuda_bindings', 'torch',
    'rosbags', 'mcap', 'tqdm', 'matplotlib', 'pycocotools', 'rclpy', 'rcl_interfaces',
    'ament_index_python', 'builtin_interfaces', 'std_msgs', 'geometry_msgs', 'sensor_msgs',
    'vision_msgs', 'diagnostic_msgs', 'lifecycle_msgs', 'launch', 'launch_ros',
    'launch_testing', 'launch_testing_ros', 'ray', 'pyarrow', 'scipy', 'lap', 'trackeval',
    'bondpy',
]
autodoc_mock_imports = list(darknet53_mock_imports)

html_theme = 'sphinx_rtd_theme'
html_title = f'darknet53_ros {release}'
html_theme_options = {'navigation_depth': 3, 'collapse_navigation': False}
