#!/usr/bin/env bash
# `make gpu-check`: the tests marked `gpu` on a CUDA machine with no network, on that machine's own
# torch. Wheels it lacks travel in .whl/ (`make gpu-wheels` fills it here); the project itself runs
# from src/ (no install). One summary line per check at the end. Under 8 minutes on one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pathvqa-site .whl/*.whl \
    || { echo "gpu-check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH="/tmp/pathvqa-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
$PY - <<'PY'
import torch, transformers, peft, accelerate
print(f"gpu-check: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"accelerate {accelerate.__version__}; CUDA {torch.cuda.is_available()} "
      f"({torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no device'})")
PY
$PY -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider -q -s -rA --no-header -o addopts="" "$@"
