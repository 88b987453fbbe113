#!/usr/bin/env bash
# Installs what the local cloud stand-ins of the tests need (tests/standins/):
#   - fake-gcs-server, built from its pinned Go module into .cache/bin/ (needs Go >= 1.26 once: $GO, `go` on
#     PATH, or /usr/local/go/bin/go; downloads go through the Go module proxy);
#   - iproute2 (`ip netns`), from apt, only when `ip` is missing.
# Idempotent and cached: a no-op (well under a second) when both are there at the pinned version. Run it once
# per clone or image, as root; nothing is downloaded when tests or pipelines run.
set -euo pipefail
cd "$(dirname "$0")/.."

FAKE_GCS_SERVER_VERSION=v1.56.1  # keep in step with FAKE_GCS_SERVER_VERSION in tests/standins/gcs_netns.py
bin_dir="$PWD/.cache/bin"
binary="$bin_dir/fake-gcs-server"
stamp="$binary.version"

if ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_standins: iproute2 (ip) is missing; run this script as root to apt-get it" >&2
    exit 1
  fi
  echo "install_standins: apt-get install iproute2"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2
fi

if [ -x "$binary" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$FAKE_GCS_SERVER_VERSION" ]; then
  echo "install_standins: fake-gcs-server $FAKE_GCS_SERVER_VERSION already at $binary"
  exit 0
fi

go=""
for candidate in "${GO:-}" go /usr/local/go/bin/go; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1; then go=$(command -v "$candidate"); break; fi
done
if [ -z "$go" ]; then
  echo "install_standins: Go not found (looked at \$GO, go on PATH, /usr/local/go/bin/go); fake-gcs-server" >&2
  echo "                  $FAKE_GCS_SERVER_VERSION needs Go >= 1.26 to build (https://go.dev/dl/)." >&2
  exit 1
fi

echo "install_standins: building fake-gcs-server $FAKE_GCS_SERVER_VERSION with $("$go" version) (a few minutes once)"
mkdir -p "$bin_dir"
rm -f "$stamp"
start=$(date +%s)
GOBIN="$bin_dir" CGO_ENABLED=0 "$go" install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION"
"$go" version -m "$binary" | grep -q "fake-gcs-server[[:space:]]*$FAKE_GCS_SERVER_VERSION" || {
  echo "install_standins: $binary does not report version $FAKE_GCS_SERVER_VERSION" >&2
  exit 1
}
echo "$FAKE_GCS_SERVER_VERSION" > "$stamp"
echo "install_standins: fake-gcs-server $FAKE_GCS_SERVER_VERSION installed at $binary in $(( $(date +%s) - start )) s"
