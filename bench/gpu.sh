#!/usr/bin/env bash
# The GPU checks in one call of a lent GPU machine (it has PyTorch, Lightning, torchmetrics and scikit-learn, but no
# Jupyter and no internet), each step under its own time limit so the call always returns:
#   1. "run all" of the default settings from the shipped checkpoints (execute.py), the executed copy kept;
#   2. bench/speed.py --device cuda (throughput, an epoch, sample(10_000), the K = 1000 bound and its bias with a
#      bf16 decoder, "run all"), into bench/results/speed.json and docs/speed.md;
#   3. the notebook's smoke test and the model, training and bench tests, on the GPU;
#   4. the K = 1000 bound's time against the decoder's batch size (what `decoder_budget` picks for a GPU);
#   5. the default settings retrained from scratch on the GPU (papermill, nothing pretrained but the classifier;
#      RETRAIN_EPOCHS=N trains N epochs instead of the notebook's MAX_EPOCHS), the trained files copied to $OUT.
# GPU_STEPS picks some of them (default: all five, by these names), and adds the one not run by default:
#   run_all speed tests sweep retrain     recipe: bench/recipe.py lr_2e-3 --epochs 150 (the shipped recipe for the
#   tutorial's 150 epochs), in the background right after run_all, so the steps after it share the GPU (it is
#   refused beside the timed steps, speed and sweep).
# It expects the ignored folder .gpu/, carried with the call: wheels/ (Jupyter and importnb for the machine's
# Python 3.12, the versions of .venv) and mnist/ (the four MNIST files of $PATH_DATASETS, gzipped). Here, once:
#   echo /.gpu/ >> .git/info/exclude; PATH_DATASETS=$PWD/data bash bench/gpu.sh --prepare
# The tree a call sends must stay under 64 MiB: for the call, move some study settings' four files out of
# checkpoints/ and the git index, and put them back after. Results and logs go to $OUT.
# Usage (on the device machine, from the repository root): bash bench/gpu.sh
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .gpu/wheels .gpu/mnist
  for name in importnb papermill nbclient nbformat jupyter_client jupyter_core traitlets fastjsonschema jsonschema \
      jsonschema-specifications referencing rpds-py entrypoints tenacity ipykernel comm ipython ipython_pygments_lexers \
      jedi parso prompt_toolkit wcwidth pexpect ptyprocess matplotlib-inline nest-asyncio2 pyzmq tornado stack-data \
      executing asttokens pure_eval platformdirs; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .gpu/wheels \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
      "$name==$(python -m pip show "$name" | sed -n 's/^Version: //p')" || exit 1
  done
  for f in "${PATH_DATASETS:-data}"/MNIST/raw/*-ubyte; do gzip -9 -c "$f" > ".gpu/mnist/$(basename "$f").gz"; done
  du -sh .gpu/wheels .gpu/mnist
  exit
fi
set -u
t0=$(date +%s)
deadline=$((t0 + ${GPU_SECONDS:-560}))
left() { local s=$((deadline - $(date +%s) - 10)); echo $((s < $1 ? (s > 1 ? s : 1) : $1)); }  # seconds, at most $1
step() { echo; echo "=== $1 ($(($(date +%s) - t0)) s in)"; }
# Settings missing here are not downloaded (the machine is offline): a closed local port fails at once.
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PRETRAINED_URL=http://127.0.0.1:9/
exec > >(tee -a "$OUT/log.txt") 2>&1

step "environment"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/site
mkdir -p data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > "data/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, pytorch_lightning, torchmetrics, sklearn, papermill; print(torch.__version__, \
torch.version.cuda, torch.cuda.get_device_name(0), 'lightning', pytorch_lightning.__version__, 'torchmetrics', \
torchmetrics.__version__, 'sklearn', sklearn.__version__, 'papermill', papermill.__version__)"

steps=" ${GPU_STEPS:-run_all speed tests sweep retrain} "
wants() { [[ "$steps" == *" $1 "* ]]; }
if wants recipe && { wants speed || wants sweep; }; then echo "recipe would share the GPU with timed steps"; exit 1; fi

wants run_all && { step "run all, default settings, shipped checkpoints (execute.py)"
start=$(date +%s)
timeout "$(left 180)" python3 execute.py && echo "execute.py: $(($(date +%s) - start)) s"
cp vae_mnist.ipynb "$OUT/default_gpu.ipynb"; }

wants recipe && { step "bench/recipe.py lr_2e-3 --epochs 150, in the background (recipe.log)"
  rm bench/results/recipe/lr_2e-3_z3.json  # the committed result must not come back as this run's
  (PATH_DATASETS=$PWD/data timeout "$(left 100000)" python3 bench/recipe.py lr_2e-3 --epochs 150 --quality-every 25 \
    > "$OUT/recipe.log" 2>&1; cp bench/results/recipe/lr_2e-3_z3.json "$OUT/") &
  recipe_pid=$!; }

wants speed && { step "bench/speed.py --device cuda"
timeout "$(left 200)" python3 bench/speed.py --device cuda --repeats 5 --run-all-repeats 1
cp bench/results/speed.json "$OUT/speed.json"; cp docs/speed.md "$OUT/speed.md"; }

wants tests && { step "tests on the GPU: the notebook's smoke run, the model, training and bench tests"
PATH_DATASETS=$PWD/data timeout "$(left 180)" python3 -m pytest -q -p no:cacheprovider \
  tests/test_notebook.py::test_notebook_runs_end_to_end_in_smoke_mode tests/test_model.py tests/test_bench.py \
  tests/test_training.py; }

wants sweep && { step "the K = 1000 bound against the decoder's batch (images per decoder call), 2,000 test images"
timeout "$(left 40)" python3 - <<'EOF'
import sys, time
sys.path.insert(0, ".")
from vae_mnist.benchmarks import shipped_model, synchronize
from vae_mnist.likelihood import iwae_bounds
from vae_mnist.notebook import DequantizedMNIST, dataset_root
model = shipped_model().cuda()
test = DequantizedMNIST(dataset_root(), train=False)
for budget in (8192, 2048, 32768, 131072, 8192):
    synchronize(model.device); start = time.perf_counter()
    bound = iwae_bounds(model, test, 1000, 0, images=2000, budget=budget)["bound"]["1000"]
    synchronize(model.device)
    print(f"budget {budget:>6}: {time.perf_counter() - start:6.2f} s for 2,000 images, bound {bound:.4f} nats")
EOF
}

wants retrain && { step "the default settings retrained from scratch on the GPU (papermill)"
fresh=/tmp/fresh && mkdir -p $fresh/checkpoints && cp checkpoints/mnist_classifier.pt $fresh/checkpoints/
start=$(date +%s)
PATH_CHECKPOINTS=$fresh/checkpoints PATH_FIGURES=$fresh/figures PATH_RUNS=$fresh/runs \
  timeout "$(left 600)" python3 -m papermill vae_mnist.ipynb "$OUT/retrain_gpu.ipynb" --log-level ERROR \
  ${RETRAIN_EPOCHS:+-p MAX_EPOCHS "$RETRAIN_EPOCHS"} && echo "retrain run all: $(($(date +%s) - start)) s"
# the trained model comes back whole (checkpoint, record, measurements), else the partial run's metrics
cp $fresh/checkpoints/vae_* "$OUT/" 2>/dev/null || find $fresh -name metrics.csv -exec cp {} "$OUT/retrain_metrics.csv" \; ; }

# the recipe in the background, if any (a bare wait would also wait for the tee above, which never ends)
[ -n "${recipe_pid:-}" ] && wait "$recipe_pid"
ls -la "$OUT"
