#!/usr/bin/env bash
# Set up kdplug in a virtual environment at <repo>/.venv, on a fresh machine or an existing one.
#
#   bash tools/install.sh                 # full: torch + mmengine + full mmcv (compiled ops) + mmpretrain + mmdet
#                                         #       + mmsegmentation (the segmentation example plugin's)
#   bash tools/install.sh classification  # torch + mmengine + mmcv-lite + mmpretrain: no mmcv build (a few minutes)
#
# Both install kdplug (editable) with its test tools; KDPLUG_INSTALL=classification picks the mode too. The modes can
# follow each other in one .venv: full after classification replaces mmcv-lite with the full mmcv; classification
# after full keeps the full mmcv (it serves mmpretrain too; mmcv-lite would overwrite its files), mmdet and mmseg.
#
# mmcv 2.x exists on PyPI as source only, and its setup.py needs two patches to build against torch >= 2.10
# (C++20 headers) and setuptools without pkg_resources. The built wheel is cached in
# ${KDPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/kdplug} so that later installs on this machine skip the
# ~8-18 minute build; a fresh machine builds it here. Its ops are CUDA ops when nvcc is found and torch sees a GPU
# (FORCE_CUDA=1), else CPU ops; FORCE_CUDA=0/1 in the environment decides instead. Re-running is cheap and safe.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-${KDPLUG_INSTALL:-full}}
venv=${KDPLUG_VENV:-$repo/.venv}
python=${PYTHON:-python3}
cache=${KDPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kdplug}
torch_spec=${KDPLUG_TORCH:-torch==2.14.1 torchvision==0.29.1}
mmcv_version=2.1.0
mmpretrain_spec=mmpretrain==1.2.0
log() { printf '[install] %s\n' "$*"; }
case $mode in
  full | classification) ;;
  *) echo "usage: bash tools/install.sh [full|classification]  (got '$mode')" >&2; exit 2 ;;
esac
log "mode: $mode"

[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

log "base tools (setuptools < 82 keeps pkg_resources, which mmcv's build and mmengine's 'mmpretrain::' configs use)"
pip install --upgrade pip 'setuptools>=77.0.3,<82' wheel ninja
log "torch: $torch_spec"
# shellcheck disable=SC2086
pip install $torch_spec 'numpy<2.4' 'setuptools>=77.0.3,<82'

full_mmcv_ok() { "$py" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$mmcv_version')" 2>/dev/null; }

if [ "$mode" = classification ]; then
  if full_mmcv_ok; then
    log "full mmcv $mmcv_version with compiled ops already installed: keeping it (it serves mmpretrain too)"
    log "OpenMMLab packages and kdplug (editable, with the test tools): mmpretrain on the full mmcv"
    pip install -e "$repo[tests,docs]" "$mmpretrain_spec"
  else
    if "$py" -m pip show -q mmcv >/dev/null 2>&1; then
      log "removing an mmcv that is not $mmcv_version with working compiled ops (mmcv-lite replaces it)"
      pip uninstall -y mmcv >/dev/null
    fi
    log "OpenMMLab packages and kdplug (editable, with the test tools): mmpretrain and mmcv-lite, no mmcv build"
    pip install -e "$repo[classification,tests,docs]"
  fi
  "$py" -c 'import mmcv, mmengine, mmpretrain, kdplug; print("[install] ok (classification): kdplug", kdplug.__version__, "| mmengine", mmengine.__version__, "| mmcv", mmcv.__version__, "| mmpretrain", mmpretrain.__version__)'
  if "$py" -c 'import mmdet, mmcv.ops' 2>/dev/null; then
    log "mmdet and the full mmcv of an earlier full install stay: detection works in this .venv too"
  else
    log "detection (mmdet, mmcv ops) is not part of this mode: bash tools/install.sh (full) adds it"
  fi
  if ! "$py" -c 'import mmseg.models' 2>/dev/null; then
    log "segmentation (mmsegmentation, mmcv ops) is not part of this mode: bash tools/install.sh (full) adds it"
  fi
  exit 0
fi

# CUDA ops need nvcc to build and a GPU to be of use; otherwise the ops are compiled for the CPU.
nvcc=$(command -v nvcc || { [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] && echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"; } || true)
gpu=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ -n "${FORCE_CUDA:-}" ]; then
  force_cuda=$FORCE_CUDA
  log "mmcv ops: FORCE_CUDA=$force_cuda from the environment (nvcc: ${nvcc:-not found}, torch sees a GPU: $gpu)"
elif [ -n "$nvcc" ] && [ "$gpu" = 1 ]; then
  force_cuda=1
  log "mmcv ops: CUDA and CPU (FORCE_CUDA=1): nvcc at $nvcc and torch sees a GPU"
else
  force_cuda=0
  if [ "$gpu" = 1 ]; then
    log "mmcv ops: CPU only (FORCE_CUDA=0): torch sees a GPU but nvcc is not found (CUDA_HOME=${CUDA_HOME:-unset});" \
      "detection with RoIAlign/NMS on the GPU needs CUDA ops: install the CUDA toolkit and re-run"
  else
    log "mmcv ops: CPU only (FORCE_CUDA=0): torch sees no GPU (nvcc: ${nvcc:-not found})"
  fi
fi
suffix=$([ "$force_cuda" = 1 ] && echo -cudaops || true)  # the cached CPU-ops wheel keeps its earlier name
# an installed mmcv with CUDA ops serves the CPU too; one with CPU ops only is replaced when CUDA ops are wanted
has_wanted_ops() {
  full_mmcv_ok && { [ "$force_cuda" != 1 ] || "$py" -c "import sys; from mmcv.ops import get_compiling_cuda_version as v
sys.exit(v() == 'not available')" 2>/dev/null; }
}

tag=$("$py" -c 'import sys, torch; print("torch%s-cp%d%d" % (torch.__version__.replace("+", "_"), *sys.version_info[:2]))')
wheel_dir="$cache/mmcv-$mmcv_version-$tag$suffix"
if has_wanted_ops; then
  log "mmcv $mmcv_version with compiled ops already installed"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcv_version with ops from source (~8-18 min on 2 cores); cached in $wheel_dir"
    src=$(mktemp -d)
    pip download --no-deps --no-binary :all: --no-build-isolation -d "$src" "mmcv==$mmcv_version"
    tar xzf "$src"/mmcv-$mmcv_version.tar.gz -C "$src"
    bash "$repo/tools/patch_mmcv_sdist.sh" "$src/mmcv-$mmcv_version"
    mkdir -p "$src/wheel"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} FORCE_CUDA=$force_cuda \
      "$py" -m pip wheel -q --no-build-isolation --no-deps -w "$src/wheel" "$src/mmcv-$mmcv_version" \
      >"$src/build.log" 2>&1 || { tail -n 60 "$src/build.log"; log "mmcv build failed (log above)"; exit 1; }
    # the compiled extension carries ~30 MB of debug info: strip it so the cached wheel is ~1.5 MB
    if command -v strip >/dev/null; then
      "$py" -m wheel unpack -d "$src/unpacked" "$src"/wheel/mmcv-*.whl
      find "$src/unpacked" -name '_ext*.so' -exec strip --strip-debug {} +
      mkdir -p "$src/stripped" && "$py" -m wheel pack -d "$src/stripped" "$src"/unpacked/mmcv-*
    else
      cp -r "$src/wheel" "$src/stripped"
    fi
    mkdir -p "$wheel_dir" && cp "$src"/stripped/mmcv-*.whl "$wheel_dir/"
    rm -rf "$src"
  fi
  if "$py" -m pip show -q mmcv-lite >/dev/null 2>&1; then
    log "removing mmcv-lite (a classification install's): the full mmcv replaces it"
    pip uninstall -y mmcv-lite >/dev/null
  fi
  log "installing mmcv $mmcv_version from $wheel_dir"
  pip install --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
fi

log "OpenMMLab packages and kdplug (editable, with the test tools)"
pip install -e "$repo[full,tests,docs]"
"$py" - <<'PY'
import kdplug, mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, mmseg.models
cuda = mmcv.ops.get_compiling_cuda_version()
ops = 'CPU only' if cuda == 'not available' else f'CUDA {cuda} and CPU'
print(f'[install] ok: kdplug {kdplug.__version__} | mmengine {mmengine.__version__} | mmcv {mmcv.__version__} (ops: {ops})'
      f' | mmpretrain {mmpretrain.__version__} | mmdet {mmdet.__version__} | mmseg {mmseg.__version__}')
PY
