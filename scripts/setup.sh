#!/usr/bin/env bash
# Create .venv and install seqviz-trackers with what the demo or the tests need.
#   scripts/setup.sh          runtime extras (demo, TensorBoard, W&B, server)
#   scripts/setup.sh dev      + test tools and headless Chromium (Debian/Ubuntu, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The CPU build of torch; on machines without a local wheel this is a normal PyPI install.
TORCH_SPEC=${SEQVIZ_TORCH_SPEC:-torch==2.13.0}

# Noise hidden, nothing else: pip as configured on some machines warns about every missing local
# index folder; and setuptools' editable install of a flat layout with several top-level packages
# (seqviz_trackers, tb_plugin, wandb_panel) emits an "Editable installation." note that pip shows
# as a warning box even with -q (a Python warning filter in the build process hides just that one).
pip_install() {
  PYTHONWARNINGS="ignore:Editable installation:UserWarning" .venv/bin/python -m pip install -q "$@" \
    2> >(grep -v "^WARNING: Location '" >&2)
}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
pip_install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "==> installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
extras="all"
[ "${1:-}" = "dev" ] && extras="dev"
echo "==> installing seqviz-trackers[$extras]"
pip_install -e ".[$extras]"

if [ "${1:-}" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
