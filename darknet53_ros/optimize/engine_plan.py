"""What a TensorRT build does on each TensorRT version, decided without TensorRT.

:func:`plan_build` turns the request (precision, model kind, DLA core, batch profile) and the
TensorRT version into a :class:`BuildPlan`: network creation flags, builder flags, strong or
weak typing, the engine's real precision and the precision of the layers kept in floating
point. The rules, from the TensorRT 8.5, 10.x and 11.x Python APIs and NVIDIA's 10.x -> 11.x
migration guide:

* The default precision is ``int8`` for a Q/DQ model and ``fp16`` for a float model.
* A Q/DQ model is always an INT8 engine. TensorRT >= 10.12 (which deprecates the weak typing
  flags) and 11 (which removes ``BuilderFlag.FP16/INT8``) build it strongly typed: the float
  layers run in the ONNX model's own type. Older versions set ``INT8`` (plus ``FP16`` unless
  fp32 is asked for the float layers).
* ``EXPLICIT_BATCH`` is set before TensorRT 10 only; TensorRT 11 networks are always strongly
  typed (no creation flag needed).
* Under weak typing with FP16 on, the YOLO decode (``exp(t) * anchor``, pixel coordinates) is
  pinned to FP32 with layer precision constraints (``OBEY_PRECISION_CONSTRAINTS``).
* An FP32 model at ``int8`` needs the legacy calibrator (TensorRT < 11, with ``--calib``);
  otherwise ``darknet53 quantize``. At ``fp16`` on TensorRT 11 it needs an FP16 ONNX model.
* DLA needs a fixed batch (min = opt = max, as ``NvInfer.h`` requires) and a reduced
  precision, and exists only where NVIDIA's "Working with DLA" says so (:func:`dla_support`):
  TensorRT 8.x and 10.0 - 10.7 (10.7 was the last 10.x with DLA), then 11.4.1 on Jetson AGX
  Orin with JetPack 7.2.2+; not 10.8 - 10.x, 11.0 - 11.3, 11.4.0 (Windows on ARM only) or 11.5
  (no JetPack support).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from darknet53_ros.errors import ConfigError, EngineError

PRECISIONS = ('fp32', 'fp16', 'int8')
#: First TensorRT with weak typing deprecated: Q/DQ models build strongly typed from here on.
STRONG_QDQ_FROM = (10, 12)
#: TensorRT 11 releases with DLA (earlier 11.x have none).
DLA_IN_11_FROM = (11, 4, 1)
#: First 10.x without DLA (10.7 was the last 10.x release that supported it).
NO_DLA_IN_10_FROM = (10, 8)
#: NVIDIA's "Working with DLA" as of TensorRT 11.5.0, per version range: ``(first, end,
#: reason)`` with ``end`` exclusive; a version in a range has no DLA on Jetson.
NO_DLA: tuple[tuple[tuple[int, ...], tuple[int, ...], str], ...] = (
    (NO_DLA_IN_10_FROM, (11,), 'TensorRT 10.7 was the last 10.x release with DLA'),
    ((11,), (11, 4), 'TensorRT 11.0 to 11.3 have no DLA'),
    ((11, 4, 0), DLA_IN_11_FROM, 'TensorRT 11.4.0 has DLA on Windows on ARM only'),
    ((11, 5), (11, 6), 'TensorRT 11.5 does not support JetPack (DLA on Orin is in 11.4.1)'),
)
DLA_WAY_OUT = ('build on the TensorRT 10.x of JetPack 6 (10.3) or with TensorRT 11.4.1 on Jetson '
               'AGX Orin with JetPack 7.2.2 or later, or leave --dla-core out to build for the '
               'GPU')
QUANTIZE_HINT = ('run `darknet53 quantize --model {model} --calib IMAGES -o MODEL_int8.onnx` '
                 'and build from the Q/DQ model')


@dataclass(frozen=True)
class BuildPlan:
    """How to build one engine.

    Attributes:
        precision: the engine's precision as recorded (``int8`` for any Q/DQ model).
        float_precision: what the layers kept in floating point compute in.
        requested: the precision asked for (``None``: the default).
        strongly_typed: the network is strongly typed (types from the ONNX model).
        network_flags: ``NetworkDefinitionCreationFlag`` names to set.
        builder_flags: ``BuilderFlag`` names to set, in order.
        legacy_int8: implicit INT8 calibration of a float model.
        pin_decode_fp32: constrain the decode layers to FP32 (weak typing with FP16 on).
        notes: things worth telling the user (logged by the builder).
    """

    precision: str
    float_precision: str
    requested: str | None
    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    legacy_int8: bool = False
    pin_decode_fp32: bool = False
    notes: tuple[str, ...] = field(default=())


def default_precision(qdq: bool) -> str:
    """``int8`` for a Q/DQ model, ``fp16`` otherwise."""
    return 'int8' if qdq else 'fp16'


def dla_support(version: Sequence[int]) -> str | None:
    """Why TensorRT ``version`` has no DLA on Jetson (None: it has, as far as NVIDIA documents;
    releases after 11.5 are not known yet and pass, the builder then asks the device)."""
    numbers = tuple(int(v) for v in version)
    for first, end, reason in NO_DLA:
        if first <= numbers < end:
            return reason
    return None


def check_dla(dla_core: int | None, batch: Sequence[int], version: Sequence[int]) -> None:
    """Refuse DLA settings TensorRT rejects: a dynamic batch, or a TensorRT without DLA."""
    if dla_core is None:
        return
    if dla_core < 0:
        raise ConfigError(f'DLA core {dla_core}: must be >= 0')
    low, opt, high = batch
    if not low == opt == high:
        raise ConfigError(f'DLA core {dla_core}: DLA needs a fixed batch (MIN = OPT = MAX), '
                          f'got --batch {low}:{opt}:{high}; use --batch {high}')
    reason = dla_support(version)
    if reason is not None:
        shown = '.'.join(str(v) for v in version)
        raise EngineError(f'DLA core {dla_core}: TensorRT {shown} has no DLA ({reason}); '
                          f'{DLA_WAY_OUT}')


def plan_build(version: Sequence[int], requested: str | None, qdq: bool, fp16_model: bool,
               model: str = 'MODEL.onnx', calibrate: bool = False,
               dla_core: int | None = None, batch: Sequence[int] = (1, 1, 1)) -> BuildPlan:
    """The :class:`BuildPlan` for TensorRT ``version`` (numbers, e.g. ``(10, 3, 0)``).

    Raises:
        ConfigError: unknown precision, DLA with a dynamic batch or at fp32.
        EngineError: a request this TensorRT cannot build, naming the way out.
    """
    if requested is not None and requested not in PRECISIONS:
        raise ConfigError(f'precision {requested!r}: expected one of {PRECISIONS}')
    version = tuple(version)
    check_dla(dla_core, batch, version)
    precision = requested or default_precision(qdq)
    if dla_core is not None and precision == 'fp32' and not qdq:
        raise ConfigError('DLA needs --precision fp16 or int8')
    v10, v11 = version >= (10,), version >= (11,)
    fallback = ('GPU_FALLBACK',) if dla_core is not None else ()
    notes: list[str] = []
    if qdq:
        strong = version >= STRONG_QDQ_FROM
        if strong:
            float_precision = 'fp16' if fp16_model else 'fp32'
            if requested == 'fp16' and not fp16_model:
                notes.append('strongly typed build: layers kept in floating point run in the '
                             "model's FP32 (convert it with ModelOpt AutoCast for FP16)")
            return BuildPlan('int8', float_precision, requested, True,
                             () if v11 else ('STRONGLY_TYPED',), fallback, notes=tuple(notes))
        float_precision = 'fp32' if requested == 'fp32' else 'fp16'
        flags = (('FP16',) if float_precision == 'fp16' else ()) + ('INT8',)
        return BuildPlan('int8', float_precision, requested, False,
                         () if v10 else ('EXPLICIT_BATCH',), flags + fallback,
                         pin_decode_fp32=float_precision == 'fp16')
    if precision == 'int8':
        if v11 or not calibrate:
            raise EngineError(f'{model}: an FP32 model needs explicit quantisation for INT8: '
                              + QUANTIZE_HINT.format(model=model)
                              + ('' if v11 else ' (or pass --calib for legacy calibration)'))
        return BuildPlan('int8', 'fp16', requested, False,
                         () if v10 else ('EXPLICIT_BATCH',), ('FP16', 'INT8') + fallback,
                         legacy_int8=True, pin_decode_fp32=True)
    if v11:
        if precision == 'fp16' and not fp16_model:
            raise EngineError(
                f'{model}: TensorRT {".".join(map(str, version))} builds strongly typed '
                'networks only (no FP16 flag): convert the model to FP16 first (ModelOpt '
                'AutoCast), build with --precision fp32, or build an INT8 Q/DQ model from '
                '`darknet53 quantize` (the default precision for it)')
        actual = 'fp16' if fp16_model else 'fp32'
        return BuildPlan(actual, actual, requested, True, (), fallback)
    flags = ('FP16',) if precision == 'fp16' else ()
    return BuildPlan(precision, precision, requested, False, () if v10 else ('EXPLICIT_BATCH',),
                     flags + fallback, pin_decode_fp32=precision == 'fp16')
