#!/usr/bin/env bash
# Reproduce the bundled demo model darknet53_ros/models/demo.{cfg,weights,names}.
#
# Reduced-width Darknet-53 / YOLOv3 (width multiplier 0.125, 5 classes, 320x256 input, k-means
# anchors) trained from scratch with `darknet53 train` on synthetic scenes (train seed 0,
# held-out val seed 1000003), then exported to ONNX and evaluated with `darknet53 eval`.
# CPU only, 2 PyTorch threads: training took 42 + 24 minutes on 2 shared cores.
#
# Usage: scripts/train_demo.sh [WORK_DIR]   (default /tmp/darknet53_demo)
set -euo pipefail

WORK=${1:-/tmp/darknet53_demo}
mkdir -p "$WORK"

# 1. Data: 5000 training scenes (seed 0) and 500 held-out validation scenes (seed 1000003).
darknet53 synth --out "$WORK/data" --train 5000 --val 500 --seed 0 --size 320x256 --no-progress

# 2. Anchors re-estimated by k-means (1 - IoU) for the 320x256 input
#    (gives "8,20, 17,17, 13,33, 25,25, 21,51, 37,37, 32,81, 55,54, 77,82").
ANCHORS=$(darknet53 anchors --data "$WORK/data" --size 320x256)

# 3. The cfg: YOLOv3 at width multiplier 0.125, 5 classes.
darknet53 cfg --classes 5 --width 320 --height 256 --width-multiplier 0.125 \
    --anchors "$ANCHORS" -o "$WORK/demo.cfg"

# 4. Training: 7 epochs, batch 16, AdamW lr 1e-3 (300 warm-up iterations, cosine decay),
#    multi-scale, EMA weights, seed 0; then 5 more epochs from those weights at lr 5e-4.
#    The shipped model was trained with the squared-error box loss (--box-loss mse, the
#    default then); the default is now Darknet's (--box-loss darknet, doc/training.md).
darknet53 train --cfg "$WORK/demo.cfg" --data "$WORK/data" --epochs 7 --batch 16 \
    --multi-scale --lr 1e-3 --box-loss mse --threads 2 --seed 0 --no-progress \
    -o "$WORK/stage1.weights"
darknet53 train --cfg "$WORK/demo.cfg" --data "$WORK/data" --weights "$WORK/stage1.weights" \
    --epochs 5 --batch 16 --multi-scale --lr 5e-4 --warmup 100 --box-loss mse --threads 2 \
    --seed 1 \
    --no-progress -o "$WORK/demo.weights"

# 5. Export to ONNX and evaluate on the held-out split (conf 0.001, NMS IoU 0.6).
darknet53 export --cfg "$WORK/demo.cfg" --weights "$WORK/demo.weights" \
    --names "$WORK/demo.names" -o "$WORK/demo.onnx"
darknet53 eval --model "$WORK/demo.onnx" --data "$WORK/data" --split val --conf 0.001 \
    --iou 0.6 --no-progress

# 6. INT8 (Q/DQ, percentile calibration on 200 *train* images) and its held-out mAP.
for target in tensorrt onnxruntime; do
    darknet53 quantize --model "$WORK/demo.onnx" --calib "$WORK/data/train/images" \
        --calib-count 200 --target "$target" --no-progress -o "$WORK/demo.int8-$target.onnx"
    darknet53 eval --model "$WORK/demo.int8-$target.onnx" --data "$WORK/data" --split val \
        --no-progress
done
