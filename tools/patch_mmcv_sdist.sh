#!/usr/bin/env bash
# Patch an unpacked mmcv 2.1.0 source release so that it builds against torch >= 2.10 and setuptools >= 82:
# torch's headers need C++20 (setup.py hard-codes -std=c++14/17 after CFLAGS, so only an edit works), and
# pkg_resources is gone from new setuptools (importlib.metadata + packaging do the same job). Idempotent.
set -euo pipefail
src=${1:?usage: patch_mmcv_sdist.sh path/to/mmcv-2.1.0}
sed -i \
  -e 's/^from pkg_resources import DistributionNotFound, get_distribution, parse_version$/from importlib.metadata import PackageNotFoundError as DistributionNotFound, distribution as get_distribution\nfrom packaging.version import parse as parse_version/' \
  -e 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' \
  "$src/setup.py"
grep -q 'std=c++20' "$src/setup.py" && ! grep -q '^from pkg_resources' "$src/setup.py"
