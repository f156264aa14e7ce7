#!/usr/bin/env bash
# The GPU check as one prepared run of at most 8 minutes on a GPU machine, writing one Markdown report.
#   bash benchmarks/gpu_session.sh prepare   # on a machine with PyPI: wheels and the California cache into .gpu/ (git-ignored)
#   bash benchmarks/gpu_session.sh run       # on the GPU machine, from the repo root, with .gpu/ beside the code
# `run` writes $OUT/GPU_SESSION.md (default OUT=gpu_session/) step by step, so a step that fails or runs out of time
# leaves every earlier result in place:
#   1. the README's command as written (fit, test metrics), then `evaluate` of its best.ckpt (the checkpoint reloaded);
#   2. the GPU recipe (configs/gpu.yaml) on seeds 0-2: test RMSE, epochs and wall of each;
#   3. benchmarks/gpu.py: the package eager and compiled against the raw loops (ms/step, epoch, wall, RMSE);
#   4. the whole test suite (pytest-xdist), its summary lines.
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

case "${1:-}" in
prepare)
    rm -rf .gpu && mkdir -p .gpu/wheels
    pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/wheels \
        "jsonargparse[signatures]" docstring-parser typeshed-client importlib_resources hypothesis sortedcontainers \
        optuna alembic colorlog mako sqlalchemy
    cp -r ../shared/data/scikit_learn_data .gpu/
    du -sh .gpu
    ;;
run)
    mkdir -p "$OUT"
    pip install --quiet --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD" SCIKIT_LEARN_DATA="$PWD/.gpu/scikit_learn_data"
    { echo "# GPU session"; echo; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; echo; } >"$REPORT"
    step 75 "README command" python scripts/train.py fit --config configs/california.yaml --trainer.enable_progress_bar=false \
        --trainer.logger.init_args.save_dir="$OUT/readme"
    metrics "$OUT/readme"
    best=$(ls -t "$OUT"/readme/*/version_*/checkpoints/best.ckpt 2>/dev/null | head -1)
    [ -n "$best" ] && step 30 "evaluate the README run's best.ckpt" python scripts/evaluate.py "$best" --output "$OUT/readme_evaluation"
    step 30 "gradient clipping under bf16-mixed" python scripts/train.py fit --config configs/california.yaml --model.gradient_clip 1.0 \
        --trainer.max_epochs 3 --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT/clip"
    for seed in 0 1 2; do
        step 90 "GPU recipe, seed $seed" python scripts/train.py fit --config configs/california.yaml --config configs/gpu.yaml \
            --seed_everything "$seed" --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT/recipe_$seed"
        metrics "$OUT/recipe_$seed"
    done
    step 70 "benchmarks/gpu.py" python benchmarks/gpu.py --epochs 15 --output "$OUT/GPU.md"
    [ -f "$OUT/GPU.md" ] && cat "$OUT/GPU.md" >>"$REPORT"
    step 100 "test suite" python -m pytest -q -x -n 12 -o addopts="-ra" -p no:cacheprovider
    echo "Report: $REPORT"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prepare|run" >&2
    exit 2
    ;;
esac
