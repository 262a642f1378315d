#!/usr/bin/env bash
# The image test: makes a Debian base image from Debian's packages (mmdebstrap; no registry is
# needed), builds deploy/container/Containerfile with the host-built binary (BUILD=host), runs
# it with a read-only root filesystem as its non-root user, and checks health (from the host
# and with the image's own HEALTHCHECK command), one scored article against in-process scoring,
# and a clean exit on SIGTERM. Needs podman, runc and mmdebstrap (Debian packages; installed
# when missing and running as root) and target/release/stance.
#
# The runtime flags (runc, cgroupfs, explicit ulimits) are what works in this project's
# sandboxed machines, where crun refuses hybrid cgroups and raising rlimits; they work on an
# ordinary host too. --no-healthcheck: podman runs HEALTHCHECK with systemd timers, which these
# machines lack; the test runs the same command with podman exec.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=target/release/stance
[ -x "$bin" ] || { echo "no $bin: cargo build --release first" >&2; exit 1; }
need=()
for c in podman runc mmdebstrap; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing ${need[*]} (Debian packages podman, runc, mmdebstrap)" >&2; exit 1; }
  apt-get install -y -q podman runc mmdebstrap >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q podman runc mmdebstrap >/dev/null; }
fi
podman=(podman --runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
base=localhost/stance-base:bookworm
image=localhost/stance:test
name=stance-image-test-$$

if ! "${podman[@]}" image exists "$base"; then
  tar=$(mktemp --suffix=.tar)
  mmdebstrap --quiet --variant=minbase bookworm "$tar" http://deb.debian.org/debian
  "${podman[@]}" import --quiet "$tar" "$base" >/dev/null
  rm -f "$tar"
fi
"${podman[@]}" build --quiet --format docker -f deploy/container/Containerfile \
  --build-arg BUILD=host --build-arg BASE="$base" -t "$image" . >/dev/null
echo "image: $("${podman[@]}" image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'), user $("${podman[@]}" image inspect "$image" --format '{{.Config.User}}')"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${podman[@]}" run -d --name "$name" --read-only --no-healthcheck "${limits[@]}" -p "127.0.0.1:$port:50051" "$image" >/dev/null
trap '"${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 300); do
  "$bin" health --remote "127.0.0.1:$port" --timeout-s 2 >/dev/null 2>&1 && break
  sleep 0.2
done
"$bin" health --remote "127.0.0.1:$port"
# The image's HEALTHCHECK command, run inside the container.
"${podman[@]}" exec "$name" stance health --remote 127.0.0.1:50051 >/dev/null
[ "$("${podman[@]}" exec "$name" id -u)" = 65532 ] || { echo "the container does not run as 65532" >&2; exit 1; }

remote=$(mktemp) local=$(mktemp)
"$bin" score --remote "127.0.0.1:$port" --format json tests/fixtures/article.txt >"$remote"
"$bin" score --format json tests/fixtures/article.txt >"$local"
python3 - "$remote" "$local" <<'PY'
import json, sys
r, l = (json.load(open(p)) for p in sys.argv[1:3])
shape = lambda s: [(x["text"], x["sentiment"]["label"], [(a["actor"], a["label"]) for a in x["actors"]]) for x in s["sentences"]]
assert shape(r) == shape(l), "the container's scores differ from in-process scoring"
assert [a["actor"] for a in r["actors"]] == [a["actor"] for a in l["actors"]]
print(f"scored in the container: {len(r['sentences'])} sentences, actors {[a['actor'] for a in r['actors']]}, same labels as in-process")
PY
rm -f "$remote" "$local"

"${podman[@]}" stop -t 30 "$name" >/dev/null
code=$("${podman[@]}" inspect "$name" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || { echo "the server exited $code on SIGTERM" >&2; exit 1; }
echo "container: read-only root, user 65532, SERVING, scored, exit 0 on SIGTERM"
