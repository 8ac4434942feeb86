#!/bin/bash
# Here, before a GPU session (pip needs the network; the GPU machine has none): the wheels the GPU machine's image
# lacks, into .whl/ (git-ignored), which `run` carries (carry=[".whl"]) and scripts/gpu_session.sh and
# scripts/gpu_calibration.sh install first. Pure-Python wheels without their dependencies: the image has the rest
# (timm, huggingface-hub, safetensors, numpy, pillow, matplotlib, scipy, pandas, statsmodels, seaborn;
# /work/.library/device/KINDS.md lists it). Under 1 MB in all, against the 64 MiB a call may carry.
#   cityscapesscripts, pyquaternion   armlib.data.labels imports them (missing on the H200 machines of 2026-11)
#   segmentation-models-pytorch       benchmarks/bench_gpu_loss.py's DeepLabV3+ (the "bench" extra)
set -eu
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    cityscapesscripts==2.3.0 pyquaternion==0.9.9 segmentation-models-pytorch==0.6.0
ls -l .whl
