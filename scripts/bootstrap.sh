#!/usr/bin/env bash
# Installs what the stack and the tests need, idempotently: Debian packages, then the venv.
# Called by `make up` and `make test`; safe to run again (it only does what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# nghttp2-client: h2load, the rate limit benchmark's load generator (make bench).
APT_PACKAGES=(redis-server nghttp2-client prometheus prometheus-alertmanager)
# kubernetes-client: kubectl, whose `kubectl kustomize` builds deploy/k8s in the suite (it needs
# kustomize v4+, kubectl 1.21+); a kubectl already on PATH (another distribution's) is kept.
command -v kubectl >/dev/null || APT_PACKAGES+=(kubernetes-client)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV=.venv
STAMP="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  python3 -m venv "$VENV"
fi
# Reinstall only when the dependency list (or this script) changed.
want="$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "bootstrap: installing Python packages into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
  # xds-protos ships older copies of opentelemetry/proto and google/api; the packages that own
  # those files must win, whatever order pip installed them in.
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt \
    --force-reinstall --no-deps opentelemetry-proto googleapis-common-protos
  echo "$want" > "$STAMP"
fi

# checkov (the suite's Kubernetes manifest scanner, tests/unit/k8s) has dependencies that conflict
# with the project's pins: it lives in a venv of its own, at the version the suite expects.
CHECKOV_VERSION=3.3.30
CHECKOV_VENV=.tools/checkov
if [ "$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "bootstrap: installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
