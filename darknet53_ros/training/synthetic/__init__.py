"""Deterministic synthetic detection scenes and the dataset written from them (no PyTorch).

:mod:`.objects` renders the object classes and occluders, :mod:`.scenes` composes scenes
(:func:`generate_scene`) and :mod:`.dataset` writes a split (:func:`write_dataset`); the
multi-camera rosbag2 of scenes is :func:`darknet53_ros.tools.camera_bag.write_camera_bag`.
"""
from darknet53_ros.training.synthetic.dataset import (
    VAL_SEED_OFFSET,
    coco_category_id,
    write_dataset,
)
from darknet53_ros.training.synthetic.objects import CLASS_NAMES, render_object
from darknet53_ros.training.synthetic.scenes import (
    MAX_OBJECT_FRACTION,
    MIN_BOX_SIDE,
    MIN_IMAGE_SIDE,
    MIN_OBJECT_SIZE,
    MIN_VISIBLE,
    Annotation,
    Layer,
    composite,
    draw_annotations,
    generate_scene,
)

__all__ = ['CLASS_NAMES', 'MAX_OBJECT_FRACTION', 'MIN_BOX_SIDE', 'MIN_IMAGE_SIDE',
           'MIN_OBJECT_SIZE', 'MIN_VISIBLE', 'VAL_SEED_OFFSET', 'Annotation', 'Layer',
           'coco_category_id', 'composite', 'draw_annotations', 'generate_scene',
           'render_object', 'write_dataset']
