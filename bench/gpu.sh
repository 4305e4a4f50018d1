#!/usr/bin/env bash
# Images/s per model and the share of time the GPU waits for data, on a single-GPU machine with no
# network. Uses the machine's own Python and PyTorch; installs nothing from the network.
#
# Before sending the repository there, on the machine with the corpus:
#   python -m bench.make_gpu_subset --count 1500     # bench/gpu_subset/, about 17 MB
#   optionally, wheels for timm and open_clip (and their dependencies) in .whl/, for example
#   pip download --only-binary=:all: --python-version 3.12 -d .whl timm open_clip_torch
# Then on the GPU machine, from the repository root:
#   bash bench/gpu.sh                 # the JSON goes to $OUT (when set) or bench/out/
# Extra arguments go to bench/gpu_throughput.py, e.g. `bash bench/gpu.sh --models resnet50`.
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1 SEMGAP_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT:-bench/out}"

if [ ! -d bench/gpu_subset ]; then
    echo "bench/gpu_subset/ is missing: run 'python -m bench.make_gpu_subset' where the corpus is, then send the repository again." >&2
    exit 2
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    # Local wheels only; a failure leaves the models that need them to be skipped with the reason.
    "$PYTHON" -m pip install --no-index --find-links .whl --quiet timm open_clip_torch \
        || echo "Installing from .whl/ failed; models needing timm or open_clip will be skipped." >&2
fi

"$PYTHON" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

# 280 s leaves headroom under the 5-minute budget of the machine.
timeout 280 "$PYTHON" -m bench.gpu_throughput --images bench/gpu_subset --out-dir "$OUT_DIR" "$@"
