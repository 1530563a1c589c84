"""The Python packages a robot's ``python3`` holds: what ``package.xml``'s rosdep keys install,
plus what the README's robot recipe adds by hand.

``python3 test/robot_profile.py`` prints them as pip requirements, one a line: ``.ci/run``
installs exactly these into a fresh venv and runs the whole suite there, so a test that needs
anything else (rosbags, mcap, hypothesis, torch, pycocotools, matplotlib, tqdm) must skip
with its reason. ``test/test_package.py`` keeps :data:`ROSDEP_PIP` and ``package.xml`` in step.
"""
from __future__ import annotations

from pathlib import Path
import re
import shlex
import xml.etree.ElementTree as ET

ROOT = Path(__file__).resolve().parents[1]

#: The pip package each Python rosdep key of package.xml installs (apt's python3-opencv is
#: OpenCV 4.x: the headless wheel below 5 stands in for it).
ROSDEP_PIP = {
    'python3-numpy': 'numpy',
    'python3-opencv': 'opencv-python-headless<5',
    'python3-yaml': 'pyyaml',
    'python3-scipy': 'scipy',
    'python3-onnxruntime-pip': 'onnxruntime',
    'python3-pytest': 'pytest',
}
#: The README marks its robot recipe's code blocks with this comment on the line before.
RECIPE_MARK = '<!-- robot-recipe -->'


def python_keys(package_xml: Path = ROOT / 'package.xml') -> list[str]:
    """The ``python3-*`` rosdep keys package.xml depends on (exec and test)."""
    root = ET.parse(package_xml).getroot()
    keys = [(dep.text or '').strip() for tag in ('exec_depend', 'depend', 'test_depend')
            for dep in root.iter(tag)]
    return sorted({key for key in keys if key.startswith('python3-')})


def recipe_blocks(readme: Path = ROOT / 'README.md') -> list[str]:
    """The code blocks the README marks as its robot recipe."""
    text = readme.read_text(encoding='utf-8')
    return re.findall(re.escape(RECIPE_MARK) + r'\s*```\w*\n(.*?)```', text, re.S)


def recipe_extras(readme: Path = ROOT / 'README.md') -> list[str]:
    """Packages the robot recipe installs with pip by hand (``pip install X`` lines)."""
    extras: list[str] = []
    for block in recipe_blocks(readme):
        for line in block.splitlines():
            command = line.split('#', 1)[0]
            if 'pip install' not in command:
                continue
            words = shlex.split(command.split('pip install', 1)[1].split('&&')[0])
            extras += [w for w in words if not w.startswith('-') and w not in extras]
    return extras


def requirements() -> list[str]:
    """pip requirements of the robot profile."""
    return [ROSDEP_PIP[key] for key in python_keys() if key in ROSDEP_PIP] + recipe_extras()


if __name__ == '__main__':
    print('\n'.join(requirements()))
