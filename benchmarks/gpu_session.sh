#!/usr/bin/env bash
# The GPU check of issue #14 as one prepared run on a lent GPU machine (the `device` tool sends the checkout only).
#   bash benchmarks/gpu_session.sh prepare   # here: jsonargparse wheels and the California cache into .gpu/ (git-ignored)
#   bash benchmarks/gpu_session.sh run       # there, from the repo root: device `run` with carry [".gpu"]
# `run` writes GPU.md (benchmarks/gpu.py: the package compiled and eager against the raw loops) into $OUT, then runs
# the compiled-step test, whose CUDA-graph case only runs where a GPU is.
set -euo pipefail
case "${1:-}" in
prepare)
    rm -rf .gpu && mkdir -p .gpu/wheels
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/wheels \
        "jsonargparse[signatures]" docstring-parser typeshed-client importlib_resources
    cp -r ../shared/data/scikit_learn_data .gpu/
    du -sh .gpu
    ;;
run)
    pip install --quiet --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD" SCIKIT_LEARN_DATA="$PWD/.gpu/scikit_learn_data"
    nvidia-smi --query-gpu=name,memory.total --format=csv
    timeout 420 python benchmarks/gpu.py --output "${OUT:-benchmarks}/GPU.md"
    timeout 150 python -m pytest -q -o addopts="-ra" tests/test_training_step.py
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prepare|run" >&2
    exit 2
    ;;
esac
