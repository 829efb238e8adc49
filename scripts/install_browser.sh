#!/usr/bin/env bash
# Make sure a system Chromium is on PATH for the real-browser tests (tests/test_browser.py,
# tests/test_labextension_browser.py).
# Idempotent: does nothing when `chromium` is already there. Installs Debian's `chromium` package with
# apt when run as root; otherwise says what to run. Playwright's own browser download is never used
# (set PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and never run `playwright install`).
#
# It also makes sure node >= 18 is there to build the JupyterLab extension (labextension/): when `node` is
# missing it installs Debian's `nodejs` the same way (as root, with apt), else it says what to install.
set -euo pipefail

node_major() { node -e 'process.stdout.write(String(process.versions.node.split(".")[0]))' 2>/dev/null || echo 0; }
if command -v node >/dev/null 2>&1 && [ "$(node_major)" -ge 18 ]; then
    echo "install_browser: node $(node --version) found (builds the JupyterLab extension)"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: installing Debian's nodejs (node >= 18 builds the JupyterLab extension)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs
    echo "install_browser: node $(node --version 2>/dev/null || echo '?')"
else
    echo "install_browser: node >= 18 is needed to build the JupyterLab extension (labextension/); install" >&2
    echo "    nodejs (https://nodejs.org or your package manager), then run make again" >&2
fi

if command -v chromium >/dev/null 2>&1; then
    echo "install_browser: chromium already installed: $(command -v chromium) ($(chromium --version 2>/dev/null || echo '?'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: chromium is not on PATH and this is not root; install it with" >&2
    echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
    echo "install_browser: the browser test (pytest -m browser) will be skipped until then" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: chromium is not on PATH and there is no apt-get; install Chromium by hand" >&2
    exit 0
fi

echo "install_browser: installing Debian's chromium package (apt-get install chromium fonts-liberation, no recommends)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-liberation
echo "install_browser: installed $(command -v chromium) ($(chromium --version 2>/dev/null || echo '?'))"
