#!/usr/bin/env bash
# Installs what the local cloud stand-ins of the tests need (tests/standins/):
#   - fake-gcs-server, built from its pinned Go module into .cache/bin/ (needs Go >= 1.26 once: $GO, `go` on
#     PATH, or /usr/local/go/bin/go; downloads go through the Go module proxy);
#   - iproute2 (`ip netns`), from apt, only when `ip` is missing;
#   - Beam's Flink job server (`--beam-runner flink`), assembled by Maven from Maven Central into
#     .cache/flink-job-server/ (scripts/flink-job-server/pom.xml; needs Java >= 11 and Maven once).
# Idempotent and cached: a no-op (well under a second) when all are there at the pinned versions. Run it once
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

install_flink_job_server() {
  local src="$PWD/scripts/flink-job-server" dest="$PWD/.cache/flink-job-server"
  local jar="$dest/beam-flink-job-server.jar" want have
  want=$(cat "$src/pom.xml" "$src/src/main/resources/simplelogger.properties" | sha256sum | cut -d' ' -f1)
  have=$(cat "$dest/pom.sha256" 2>/dev/null || true)
  if [ -f "$jar" ] && [ "$want" = "$have" ]; then
    echo "install_standins: Flink job server already at $jar"
    return
  fi
  for tool in java mvn; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install_standins: $tool not found; the Flink job server needs Java >= 11 and Maven" >&2; exit 1; }
  done
  echo "install_standins: assembling Beam's Flink job server with Maven (about 150 MB of jars from Maven Central, once)"
  local start build
  start=$(date +%s)
  build=$(mktemp -d)
  cp -r "$src/." "$build/"
  mvn -q -B -f "$build/pom.xml" package
  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$build/target/beam-flink-job-server.jar" "$build/target/lib" "$dest/"
  rm -rf "$build"
  echo "$want" > "$dest/pom.sha256"
  echo "install_standins: Flink job server at $jar ($(ls "$dest/lib" | wc -l) jars) in $(( $(date +%s) - start )) s"
}

install_flink_job_server

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
