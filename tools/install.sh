#!/usr/bin/env bash
# Set up kdplug in a virtual environment at <repo>/.venv, on a fresh machine or an existing one.
#
#   bash tools/install.sh            # torch + mmengine + full mmcv (compiled ops) + mmpretrain + mmdet + kdplug[tests]
#
# mmcv 2.x exists on PyPI as source only, and its setup.py needs two patches to build against torch >= 2.10
# (C++20 headers) and setuptools without pkg_resources. The built wheel is cached in
# ${KDPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/kdplug} so that later installs on this machine skip the
# ~8-18 minute build; a fresh machine builds it here. Re-running the script is cheap and safe.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${KDPLUG_VENV:-$repo/.venv}
python=${PYTHON:-python3}
cache=${KDPLUG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kdplug}
torch_spec=${KDPLUG_TORCH:-torch==2.14.1 torchvision==0.29.1}
mmcv_version=2.1.0
log() { printf '[install] %s\n' "$*"; }

[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

log "base tools (setuptools < 82 keeps pkg_resources, which mmcv's build and mmengine's 'mmpretrain::' configs use)"
pip install --upgrade pip 'setuptools>=77.0.3,<82' wheel ninja
log "torch: $torch_spec"
# shellcheck disable=SC2086
pip install $torch_spec 'numpy<2.4' 'setuptools>=77.0.3,<82'

tag=$("$py" -c 'import sys, torch; print("torch%s-cp%d%d" % (torch.__version__.replace("+", "_"), *sys.version_info[:2]))')
wheel_dir="$cache/mmcv-$mmcv_version-$tag"
if "$py" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$mmcv_version')" 2>/dev/null; then
  log "mmcv $mmcv_version with compiled ops already installed"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcv_version with ops from source (~8-18 min on 2 cores); cached in $wheel_dir"
    src=$(mktemp -d)
    pip download --no-deps --no-binary :all: --no-build-isolation -d "$src" "mmcv==$mmcv_version"
    tar xzf "$src"/mmcv-$mmcv_version.tar.gz -C "$src"
    bash "$repo/tools/patch_mmcv_sdist.sh" "$src/mmcv-$mmcv_version"
    mkdir -p "$src/wheel"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} FORCE_CUDA=${FORCE_CUDA:-0} \
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
  pip uninstall -y mmcv-lite >/dev/null 2>&1 || true
  pip install --no-deps "$wheel_dir"/mmcv-*.whl
fi

log "OpenMMLab packages and kdplug (editable, with the test tools)"
pip install -e "$repo[full,tests]"
"$py" -c 'import mmcv.ops, mmengine, mmpretrain, mmdet, kdplug; print("[install] ok: kdplug", kdplug.__version__, "| mmengine", mmengine.__version__, "| mmcv", mmcv.__version__, "| mmpretrain", mmpretrain.__version__, "| mmdet", mmdet.__version__)'
