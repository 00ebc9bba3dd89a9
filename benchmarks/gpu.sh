#!/usr/bin/env bash
# The GPU figures of the README's performance section, in parts that each fit a 10-minute
# slot on one H100 (no argument: every part, in this order):
#   throughput   ours vs the DataLoader+PIL+fp32 loop: images/s, ratio, peak memory, MFU
#   compile      the same compiled, for the two models most often tuned: runtime.compile_mode's
#                default (reduce-overhead: CUDA graphs), then the plain default mode
#   concurrency  aggregate images/s of 1, 2 and 4 worker processes on one GPU
#   learning     bf16 + channels_last vs fp32 on the real CIFAR-10 sample, 5 paired seeds
#   tests        the GPU-only tests (pytest -m gpu)
#   profile      one torch.profiler trace of a se_resnet18 epoch: where the step's time goes
#   checkpoint   the per-epoch checkpoint write of se_resnet18 on 50,000 images
#   determinism  runtime.deterministic = true trained twice: identical values?
#   search       a real search, --trials-per-gpu's default at a time on the GPU (gpu_search.toml),
#                then the journal checked against MLflow, with each trial's images/s
# CIFAR_SAMPLE points at the sample (default ../shared/data/cifar-sample). The parts up to
# determinism need torch, torchvision, click, scikit-learn, scipy and pytest; search needs
# the whole project (optuna, mlflow, tomli_w).
# Every part runs even when an earlier one fails; the exit status is the last failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
sample=${CIFAR_SAMPLE:-../shared/data/cifar-sample}
bench=(python cli.py bench --device cuda --batch-size 512 --steps 50)

parts=("$@")
[ ${#parts[@]} -gt 0 ] ||
  parts=(throughput compile concurrency learning tests profile checkpoint determinism search)
for part in "${parts[@]}"; do
  case $part in
    throughput|compile|concurrency|learning|tests|profile|checkpoint|determinism|search) ;;
    *) echo "unknown part '$part' (throughput, compile, concurrency, learning, tests," \
         "profile, checkpoint, determinism, search)" >&2
       exit 2 ;;
  esac
  if [ "$part" = learning ] && [ ! -d "$sample/cifar-10-batches-py" ]; then
    echo "no CIFAR-10 sample at $sample/cifar-10-batches-py: set CIFAR_SAMPLE" >&2
    exit 2
  fi
done
command -v nvidia-smi >/dev/null || { echo "benchmarks/gpu.sh: needs a CUDA GPU (no nvidia-smi)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'

status=0
for part in "${parts[@]}"; do
  echo "== $part"
  case $part in
    throughput) "${bench[@]}" --model se_resnet18,se_resnet34,resnet20,resnet56,densenet121 ;;
    compile) "${bench[@]}" --compile --model se_resnet18,resnet20 &&
               "${bench[@]}" --compile default --model se_resnet18,resnet20 ;;
    concurrency) "${bench[@]}" --model resnet20,se_resnet18 --concurrency 1,2,4 ;;
    learning) python cli.py check-fast-path --data-dir "$sample" --seeds 0,1,2,3,4 --device cuda ;;
    tests) python -m pytest -q -m gpu tests/search/training/test_fast_path.py tests/search/perf/test_bench.py \
             tests/search/reporting/test_gradcam.py ;;
    profile) python benchmarks/profile_step.py --device cuda --model se_resnet18 ;;
    checkpoint) python benchmarks/checkpoint_cost.py --device cuda --models se_resnet18 \
                  --images 50000 --epochs 3 --batch-size 512 ;;
    determinism) python benchmarks/determinism.py --device cuda --model se_resnet18 \
                   --images 10000 --epochs 2 --batch-size 512 ;;
    search)
      # a home of its own: the search's journal, MLflow store and checkpoints stay out of
      # the checkout's mlruns/
      home=$(mktemp -d) &&
        CIFAR_SEARCH_HOME=$home python cli.py search --study benchmarks/gpu_search.toml \
          --gpus 0 --timeout 90 --no-retrain &&
        CIFAR_SEARCH_HOME=$home python benchmarks/search_consistency.py --study gpu_search ;;
  esac || { status=$?; echo "== $part failed (exit $status)"; }
done
exit $status
