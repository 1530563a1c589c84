"""DLA availability per TensorRT version, as NVIDIA's "Working with DLA" documents it."""
from __future__ import annotations

import pytest

from darknet53_ros.errors import EngineError
from darknet53_ros.optimize.engine_plan import check_dla, dla_support, plan_build


@pytest.mark.parametrize('version, has_dla', [
    ((8, 5, 2, 2), True),      # JetPack 5
    ((8, 6, 2), True),         # JetPack 6.0
    ((10, 3, 0, 30), True),    # JetPack 6.1 / 6.2
    ((10, 7, 0), True),        # the last 10.x with DLA
    ((10, 8, 0), False),
    ((10, 16, 0, 72), False),  # JetPack 7.2
    ((11, 0, 0), False),
    ((11, 3, 1), False),       # DriveOS included
    ((11, 4, 0), False),       # Windows on ARM only
    ((11, 4, 1), True),        # Jetson AGX Orin with JetPack 7.2.2+
    ((11, 4, 2), True),
    ((11, 5, 0), False),       # no JetPack support
    ((11, 6, 0), True),        # not documented yet: left to the device's DLA core count
])
def test_dla_support_by_version(version: tuple, has_dla: bool) -> None:
    assert (dla_support(version) is None) == has_dla


@pytest.mark.parametrize('version, reason', [
    ((10, 8, 0), 'TensorRT 10.7 was the last 10.x release with DLA'),
    ((11, 2, 0), 'TensorRT 11.0 to 11.3 have no DLA'),
    ((11, 4, 0, 5), 'Windows on ARM only'),
    ((11, 5, 0), 'does not support JetPack'),
])
def test_dla_refused_in_one_line_with_version_and_reason(version: tuple, reason: str) -> None:
    with pytest.raises(EngineError) as info:
        plan_build(version, 'int8', qdq=True, fp16_model=False, dla_core=0)
    message = str(info.value)
    assert '\n' not in message
    assert '.'.join(map(str, version)) in message and reason in message
    assert '11.4.1' in message  # the way out


def test_dla_core_none_is_never_refused() -> None:
    check_dla(None, (1, 2, 4), (10, 16, 0))
