"""``darknet53 train``, ``darknet53 eval`` and ``darknet53 anchors``: training and mAP."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from darknet53_ros.errors import ConfigError
from darknet53_ros.training.options import BOX_LOSSES, TrainOptions, parse_img_size

_LOG = logging.getLogger('darknet53.train')
DATA_HELP = 'dataset: Darknet .data, YOLO data YAML, COCO JSON or dataset.yaml (or a folder)'


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``eval`` and ``anchors`` subcommands."""
    p = subparsers.add_parser(
        'train', help='train or fine-tune a Darknet cfg on a dataset (PyTorch)',
        description='Train a Darknet YOLO cfg with PyTorch (YOLOv3 loss, augmentation, '
                    'multi-scale) and write OUT.weights + OUT.cfg, a checkpoint each epoch, '
                    'loss and val mAP plots beside OUT.')
    add_train_arguments(p)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        'eval', help='COCO mAP of a model on a dataset split',
        description='mAP@0.5 and mAP@0.5:0.95 (pycocotools) of an ONNX model or TensorRT '
                    'engine through the detection pipeline; writes JSON and a PR-curve PNG.')
    p.add_argument('--model', type=Path, required=True, help='.onnx model or .engine')
    p.add_argument('--data', type=Path, required=True, help=DATA_HELP)
    p.add_argument('--split', default='val', help='split to evaluate')
    p.add_argument('--conf', type=float, default=0.001,
                   help='confidence threshold for evaluation')
    p.add_argument('--iou', type=float, default=0.6, help='NMS IoU threshold')
    p.add_argument('--max-det', type=int, default=100, help='detections per image (100)')
    p.add_argument('--batch', type=int, default=8, help='images per inference call')
    p.add_argument('--backend', default='auto', help='inference backend')
    p.add_argument('--limit', type=int, help='evaluate only the first N images')
    p.add_argument('--calib-report', type=Path,
                   help='quantisation report JSON: fail if eval images were calibration images')
    p.add_argument('--allow-overlap', action='store_true',
                   help='only warn when eval and calibration images overlap')
    p.add_argument('--json', type=Path, help='results JSON')
    p.add_argument('--plot', type=Path, help='PR-curve PNG')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser(
        'anchors', help='estimate YOLO anchors for a dataset (k-means, 1 - IoU)',
        description='K-means anchors of the training boxes at a network input size, printed '
                    'as the "w,h, w,h, ..." text "darknet53 cfg --anchors" takes.')
    p.add_argument('--data', type=Path, required=True, help=DATA_HELP)
    p.add_argument('--split', default='train', help='split')
    p.add_argument('--size', default='416', metavar='S|WxH', help='network input size')
    p.add_argument('-n', '--num', type=int, default=9, help='anchors')
    p.add_argument('--seed', type=int, default=0, help='k-means seed')
    p.set_defaults(func=run_anchors)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``darknet53 train`` options (also parsed for ``darknet53 study --finetune-args``)."""
    p.add_argument('--cfg', type=Path, required=True, help='Darknet .cfg file')
    p.add_argument('--data', type=Path, required=True,
                   help=DATA_HELP + ' with train (and val) splits')
    p.add_argument('--weights', type=Path,
                   help='initial .weights (same cfg, another class count, or a backbone prefix '
                        'such as darknet53.conv.74)')
    p.add_argument('--epochs', type=int, default=100, help='epochs')
    p.add_argument('--batch', type=int, default=16, help='batch size')
    p.add_argument('--img-size', metavar='S|WxH',
                   help='training input size, multiples of 32 (default: the cfg size)')
    p.add_argument('--multi-scale', action='store_true',
                   help='new random input size (0.7-1.3x, multiples of 32) every 10 batches')
    p.add_argument('--lr', type=float, default=1e-3, help='peak learning rate')
    p.add_argument('--optimizer', choices=('adam', 'sgd'), default='adam',
                   help='AdamW or SGD with Nesterov momentum')
    p.add_argument('--weight-decay', type=float, default=5e-4, help='on conv kernels')
    p.add_argument('--warmup', type=int,
                   help='warm-up iterations (burn-in); default: 300 capped by one epoch')
    p.add_argument('--allow-empty', action='store_true',
                   help='train even when a split has no objects (refused otherwise)')
    p.add_argument('--box-loss', choices=BOX_LOSSES, default=BOX_LOSSES[0],
                   help='box term: mse (squared error on sigmoid(txy), twh), darknet '
                        "(Darknet's gradient: sigmoid - t), giou or ciou")
    p.add_argument('--no-ema', action='store_true', help='save the raw weights, not the EMA')
    p.add_argument('--no-augment', action='store_true', help='letterbox only (debugging)')
    p.add_argument('--freeze-backbone', action='store_true',
                   help='freeze layers 0-74 (Darknet-53) when fine-tuning')
    p.add_argument('--sparsity', type=float, default=0.0, metavar='LAMBDA',
                   help='L1 on batch-norm gamma (for "prune --method bn-gamma"), e.g. 1e-4')
    p.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    p.add_argument('--workers', type=int, default=0, help='data loader processes')
    p.add_argument('--threads', type=int, help='PyTorch CPU threads (default: PyTorch)')
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--val-split', default='val', help='split for per-epoch mAP ("" = none)')
    p.add_argument('--max-batches', type=int, help='at most this many batches per epoch')
    p.add_argument('--resume', type=Path, metavar='CKPT', help='continue from a checkpoint')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument('-o', '--output', type=Path, required=True, help='output OUT.weights')


def train_options(args: argparse.Namespace) -> TrainOptions:
    """Validated :class:`~darknet53_ros.training.options.TrainOptions` from parsed train
    options."""
    if args.epochs < 1 or args.batch < 1:
        raise ConfigError('--epochs and --batch must be >= 1')
    if args.sparsity < 0:
        raise ConfigError('--sparsity must be >= 0')
    if args.resume is not None and not args.resume.is_file():
        raise ConfigError(f'--resume {args.resume}: no such checkpoint')
    return TrainOptions(
        cfg=args.cfg, data=args.data, output=args.output, weights=args.weights,
        epochs=args.epochs, batch=args.batch, img_size=parse_img_size(args.img_size),
        multi_scale=args.multi_scale, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, warmup=args.warmup, device=args.device,
        workers=args.workers, resume=args.resume, seed=args.seed,
        freeze_backbone=args.freeze_backbone, sparsity=args.sparsity, box_loss=args.box_loss,
        ema=not args.no_ema, val_split=args.val_split or None, threads=args.threads,
        progress=not args.no_progress, max_batches=args.max_batches,
        augment=not args.no_augment, allow_empty=args.allow_empty)


def run_train(args: argparse.Namespace) -> int:
    """Run ``darknet53 train``."""
    from darknet53_ros.training.trainer import train

    result = train(train_options(args), log=_LOG.info)
    _LOG.info('wrote %s and %s (%.0f s)', result.weights, result.cfg, result.seconds)
    if result.final_map50 is not None:
        _LOG.info('final val mAP@0.5 %.4f', result.final_map50)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Run ``darknet53 eval``."""
    from darknet53_ros.fileio import atomic_write_text
    from darknet53_ros.tools.evaluate import evaluate_model, format_result, plot_pr_curve

    result = evaluate_model(args.model, args.data, split=args.split, conf=args.conf,
                            iou=args.iou, batch=args.batch, backend=args.backend,
                            calib_report=str(args.calib_report) if args.calib_report else None,
                            allow_overlap=args.allow_overlap, max_detections=args.max_det,
                            progress=not args.no_progress, limit=args.limit)
    base = f'{args.model}.eval-{args.split}'
    json_path = args.json or Path(f'{base}.json')
    png_path = args.plot or Path(f'{base}.png')
    atomic_write_text(json_path, json.dumps(result.to_json(), indent=1))
    plot_pr_curve(result, png_path, f'{args.model.name} on {args.split} (conf >= {args.conf})')
    print(format_result(result))
    print(f'results: {json_path}\nPR curve: {png_path}')
    return 0


def run_anchors(args: argparse.Namespace) -> int:
    """Run ``darknet53 anchors``."""
    from darknet53_ros.io.dataset_formats import load_split
    from darknet53_ros.model.generator import COCO_ANCHORS
    from darknet53_ros.training.anchors import anchor_fitness, kmeans_anchors, label_sizes

    size = parse_img_size(args.size)
    assert size is not None
    sizes = label_sizes(load_split(args.data, args.split), *size)
    anchors = kmeans_anchors(sizes, args.num, args.seed)
    text = ', '.join(f'{int(w)},{int(h)}' for w, h in anchors)
    _LOG.info('%d boxes; mean best IoU: k-means %.3f, COCO anchors %.3f', len(sizes),
              anchor_fitness(sizes, anchors), anchor_fitness(sizes, COCO_ANCHORS))
    print(text)
    return 0
