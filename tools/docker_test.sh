#!/usr/bin/env bash
# The image's release check (`make docker-test`), with a daemonless engine (podman, buildah) as root:
#   1. installs podman, buildah, runc and debootstrap if missing, and makes the local Debian base
#      localhost/debian:bookworm-slim (debootstrap minbase, from the mirror apt uses) if it is not there;
#   2. builds the CPU image from the Dockerfile (BASE_IMAGE that base, TORCH the CPU wheel, put in
#      docker/wheels/ from TORCH_WHEEL or the PyTorch CPU index);
#   3. runs env_files/fast_dev.env through the image's ENTRYPOINT (`dsita run`) as uid 999, without network,
#      DATA_DIR bound to a host folder at /mnt, and checks the release files on the host;
#   4. runs `dsita transcribe` inside the image on one test clip.
# Usage: tools/docker_test.sh. Environment: DOCKER_TEST_DIR (default .cache/docker-test), DOCKER_TEST_IMAGE
# (default localhost/dsita:cpu), TORCH_WHEEL, DEBIAN_MIRROR (default: the one `apt-cache policy` shows).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${DOCKER_TEST_DIR:-$repo/.cache/docker-test}
image=${DOCKER_TEST_IMAGE:-localhost/dsita:cpu}
base=localhost/debian:bookworm-slim
torch=torch==2.13.0+cpu
torch_wheel=${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
release=(it-it.zip model_tensorflow_it.tar.xz model_it.tar.xz checkpoint_it.tar.xz)  # fast_dev.env: MODEL=deepspeech
start=$SECONDS

step() { printf '\n== %s (%ds so far)\n' "$1" "$((SECONDS - start))"; }
fail() { echo "docker-test: $*" >&2; exit 1; }

setup_engine() {
  local missing=() tool
  for tool in podman buildah runc debootstrap newuidmap; do
    command -v "$tool" > /dev/null || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] \
      || fail "missing ${missing[*]}: run as root, or apt-get install podman buildah debootstrap runc uidmap"
    echo "Installing podman buildah debootstrap runc uidmap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman buildah debootstrap runc uidmap > /dev/null
  fi
  [ "$(id -u)" -eq 0 ] || fail "run as root: the build and the bind mount owned by uid 999 need it"
  # No systemd and a fixed nofile limit here: cgroupfs, and no default ulimits for the containers.
  mkdir -p "$work"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n' \
    > "$work/containers.conf"
  export CONTAINERS_CONF=$work/containers.conf
  # crun fails on this kind of host; runc works, and podman wants its full path.
  runtime=$(command -v runc)
}

make_base() {
  if podman image exists "$base"; then
    echo "$base: present"
    return
  fi
  local mirror=${DEBIAN_MIRROR:-$(apt-cache policy | awk '$3 == "bookworm/main" { print $2; exit }')}
  [ -n "$mirror" ] || fail "no Debian bookworm mirror in apt-cache policy: set DEBIAN_MIRROR"
  local rootfs=$work/rootfs
  rm -rf "$rootfs"
  echo "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap failed (log: $work/debootstrap.log)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$base" > /dev/null
  rm -rf "$rootfs"
  echo "$base: imported"
}

fill_wheels() {
  local wheels=$repo/docker/wheels
  if compgen -G "$wheels/torch-2.13.0+cpu-cp311-*.whl" > /dev/null; then
    return
  fi
  if [ -f "$torch_wheel" ]; then
    ln -f "$torch_wheel" "$wheels/" 2> /dev/null || cp "$torch_wheel" "$wheels/"
    return
  fi
  local python=python3
  [ -x "$repo/.venv/bin/python" ] && python=$repo/.venv/bin/python
  echo "Downloading $torch from the PyTorch CPU index into docker/wheels/"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --index-url https://download.pytorch.org/whl/cpu -d "$wheels" "$torch" \
    || fail "no $torch wheel: set TORCH_WHEEL to its file"
}

build() {
  local secrets=()
  # A host that trusts CAs of its own (a TLS-inspecting proxy in front of PyPI, as on the machines this was
  # written on) gives the build's pip its CA bundle as a build secret: it stays out of the image.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    secrets=(--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt)
  fi
  # docker format: the OCI format drops SHELL (bash -o pipefail).
  buildah bud --isolation chroot --layers --format docker "${secrets[@]}" \
    --build-arg "BASE_IMAGE=$base" --build-arg "TORCH=$torch" -t "$image" "$repo"
  podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"
}

run_pipeline() {
  local data=$1
  # DataLoader workers pass batches through shared memory: more than the default 64 MB.
  podman --runtime "$runtime" run --rm --user 999:999 --network none --shm-size 2g \
    --env-file "$repo/env_files/fast_dev.env" --mount "type=bind,src=$data,dst=/mnt" "$image"
  local name written
  # Exactly the release files, at the top of DATA_DIR.
  written=$(cd "$data" && ls -1 -- *.zip *.tar.xz 2> /dev/null | sort | tr '\n' ' ')
  [ "$written" = "$(printf '%s\n' "${release[@]}" | sort | tr '\n' ' ')" ] \
    || fail "$data: release files ${written:-none}, expected ${release[*]}"
  for name in "${release[@]}"; do
    [ -s "$data/$name" ] || fail "$data/$name: missing or empty after dsita run"
    [ "$(stat -c %u "$data/$name")" = 999 ] || fail "$data/$name: not written by uid 999"
  done
  python3 -m zipfile -t "$data/it-it.zip" > /dev/null || fail "$data/it-it.zip: a broken zip"
  for name in model_it.tar.xz checkpoint_it.tar.xz; do
    tar -tJf "$data/$name" > /dev/null || fail "$data/$name: a broken tar.xz"
  done
  ls -l "${release[@]/#/$data/}"
}

transcribe() {
  local data=$1 clip out
  # The first test clip, never trained on (the CSV's paths are relative to its folder).
  clip=$(python3 -c 'import csv, sys; print(next(csv.DictReader(open(sys.argv[1])))["wav_filename"])' \
    "$data/extracted/test.csv")
  clip=/mnt/extracted/$clip
  out=$(podman --runtime "$runtime" run --rm --user 999:999 --network none \
    --mount "type=bind,src=$data,dst=/mnt,ro" --entrypoint dsita "$image" transcribe --json "$clip")
  echo "$out"
  python3 - "$out" "$clip" << 'EOF' || fail "dsita transcribe did not print one JSON line for $clip"
import json, sys
line = json.loads(sys.argv[1])
assert line["file"] == sys.argv[2] and isinstance(line["text"], str), line
print("transcript:", repr(line["text"]))
EOF
}

step "engine and base image"
setup_engine
make_base
step "torch CPU wheel"
fill_wheels
step "build $image"
build
data=$work/data
rm -rf "$data"
mkdir -p "$data"
chown 999:999 "$data"
step "dsita run (fast_dev.env) as uid 999, DATA_DIR=$data at /mnt"
run_pipeline "$data"
step "dsita transcribe inside the image"
transcribe "$data"
step "docker-test passed"
