#!/usr/bin/env bash
# The GPU check as one prepared run of at most 8 minutes on a GPU machine, writing one Markdown report.
#   bash benchmarks/gpu_session.sh prepare   # on a machine with PyPI: wheels and the California cache into .gpu/ (git-ignored)
#   bash benchmarks/gpu_session.sh run       # on the GPU machine, from the repo root, with .gpu/ beside the code
#   bash benchmarks/gpu_session.sh suite     # the same, the test suite only
# `run` writes $OUT/GPU_SESSION.md (default OUT=gpu_session/) step by step, so a step that fails or runs out of time
# leaves every earlier result in place:
#   1. the README's command as written (fit, test metrics), then `evaluate` of its best.ckpt (the checkpoint reloaded);
#   2. the same with --model.compile true (the step as CUDA graphs: the path that crashed), evaluated the same way;
#   3. gradient clipping under bf16-mixed with the fused AdamW (3 epochs);
#   4. the comparables model (configs/comparables.yaml): fit, test metrics, evaluate of its best.ckpt;
#   5. the whole test suite (pytest-xdist), its summary lines.
# The GPU recipe (configs/gpu.yaml, seeds 0-2) and benchmarks/gpu.py are run by hand when time allows:
#   python scripts/train.py fit --config configs/california.yaml --config configs/gpu.yaml --seed_everything 0
#   python -m benchmarks.gpu --epochs 15 --output GPU.md
set -uo pipefail
OUT="${OUT:-gpu_session}"
REPORT="$OUT/GPU_SESSION.md"

step() {  # step SECONDS TITLE COMMAND...: run bounded by timeout, log to $OUT, add the exit code and tail to the report
    local seconds=$1 title=$2 log="$OUT/$(echo "$2" | tr -c 'a-zA-Z0-9\n' '_').log"
    shift 2
    local start=$SECONDS
    timeout "$seconds" "$@" >"$log" 2>&1
    local code=$?
    { echo "## $title"; echo; echo "\`$*\` — exit $code in $((SECONDS - start)) s (limit $seconds s)"; echo; echo '```';
      grep -v -e "Warning" -e "warn(" "$log" | tail -n 14; echo '```'; echo; } >>"$REPORT"
    return $code
}

metrics() {  # the test metrics and epochs of the newest run under $1
    local run
    run=$(ls -td "$1"/*/version_* 2>/dev/null | head -1)
    [ -n "$run" ] && echo "- $run: test $(cat "$run/test_metrics.json" 2>/dev/null), epochs $(($(cut -d, -f1 "$run/metrics.csv" | sort -un | tail -1) + 1))" >>"$REPORT"
}

evaluate_best() {  # evaluate the best.ckpt of the newest run under $1: the checkpoint reloaded, its test metrics again
    local best
    best=$(ls -t "$1"/*/version_*/checkpoints/best.ckpt 2>/dev/null | head -1)
    [ -n "$best" ] && step 30 "evaluate $best" python scripts/evaluate.py "$best" --output "$1/evaluation"
}

setup() {  # the wheels and the data from .gpu/, the report's header
    mkdir -p "$OUT"
    pip install --quiet --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD" SCIKIT_LEARN_DATA="$PWD/.gpu/data/scikit_learn_data" \
        HOUSE_PRICE_SHARED_DATA="$PWD/.gpu/data"
    { echo "# GPU session"; echo; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; echo; } >"$REPORT"
}

suite() {  # with the GPU visible (HOUSE_PRICE_TEST_GPU=1); SIGINT at the limit, so pytest still prints what failed and why
    HOUSE_PRICE_TEST_GPU=1 step 170 "test suite, GPU visible" timeout -s INT 160 \
        python -m pytest -q -n 16 --tb=line -rfE -o addopts="" -p no:cacheprovider -W ignore::UserWarning
}

case "${1:-}" in
prepare)
    rm -rf .gpu && mkdir -p .gpu/wheels
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/wheels \
        "jsonargparse[signatures]" docstring-parser typeshed-client importlib_resources hypothesis sortedcontainers \
        optuna alembic colorlog mako sqlalchemy
    cp -r ../shared/data .gpu/data  # the tests read all of it
    du -sh .gpu
    ;;
run)
    setup
    step 75 "README command" python scripts/train.py fit --config configs/california.yaml --trainer.enable_progress_bar=false \
        --trainer.logger.init_args.save_dir="$OUT/readme"
    metrics "$OUT/readme"
    evaluate_best "$OUT/readme"
    step 90 "README command, compiled (--model.compile true: CUDA graphs)" python scripts/train.py fit --config configs/california.yaml \
        --model.compile true --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT/compiled"
    metrics "$OUT/compiled"
    evaluate_best "$OUT/compiled"
    step 30 "gradient clipping under bf16-mixed" python scripts/train.py fit --config configs/california.yaml --model.gradient_clip 1.0 \
        --trainer.max_epochs 3 --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT/clip"
    step 75 "comparables (configs/comparables.yaml)" python scripts/train.py fit --config configs/california.yaml \
        --config configs/comparables.yaml --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT/comparables"
    metrics "$OUT/comparables"
    evaluate_best "$OUT/comparables"
    suite
    echo "Report: $REPORT"
    ;;
suite)
    setup
    suite
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prepare|run|suite" >&2
    exit 2
    ;;
esac
