#!/usr/bin/env bash
# Make a Docker engine answer on this machine, for the container test (see tests/container/).
# Idempotent: installs docker.io and debootstrap when missing, starts dockerd when none answers, and imports a
# local Debian base with Python (local/base:bookworm) when the engine lacks it. No registry is needed.
# Prints one line; exits 0 when an engine answers and the base exists, 1 otherwise (the test then skips).
set -uo pipefail
log=${WILDFIRE_KD_DOCKER_LOG:-/tmp/wildfire-kd-dockerd.log}
base=${WILDFIRE_KD_BASE_IMAGE:-local/base:bookworm}  # the tests' BASE; another tag only for the script's own test

if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null 2>&1 \
            || { echo "docker-engine: cannot install docker.io/debootstrap"; exit 1; }
    fi
    (setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs >"$log" 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "docker-engine: dockerd did not start (see $log)"; exit 1; }
fi

# The image runs as uid 1000: a base whose / that user cannot enter (an earlier version of this script made one
# from a mode-700 mktemp folder) fails every RUN after USER. Notice it and repair it: `docker export` carries the
# files without the root folder's mode, so re-importing them gives a readable / (seconds); if that does not do
# it, remove the base and build it again below.
uid_1000_runs() { docker run --rm --network none --user 1000:1000 "$base" /bin/sh -c true >/dev/null 2>&1; }
if docker image inspect "$base" >/dev/null 2>&1 && ! uid_1000_runs; then
    echo "docker-engine: $base is not usable by uid 1000 (its / is not readable); repairing it"
    broken=$(docker image inspect --format '{{.Id}}' "$base")
    container=$(docker create "$base" /bin/true 2>/dev/null) \
        && docker export "$container" | docker import - "$base" >/dev/null 2>&1
    [ -n "${container:-}" ] && docker rm "$container" >/dev/null 2>&1
    docker image rm "$broken" >/dev/null 2>&1  # now untagged (or still the base, if the import failed: kept)
    uid_1000_runs || docker image rm -f "$base" >/dev/null 2>&1
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
    root=$(mktemp -d /tmp/wildfire-kd-debroot.XXXXXX)
    chmod 755 "$root"  # mktemp -d makes it 700, and the folder becomes the image's /
    mirror=$(grep -ho 'http[^ ]*debian' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | grep -v snapshot | head -1)
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" \
        "${mirror:-http://deb.debian.org/debian}" >/dev/null 2>&1 || { echo "docker-engine: debootstrap failed"; exit 1; }
    # package registries are reached through a TLS proxy whose CA only the host trusts
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
    tar -C "$root" -c . | docker import - "$base" >/dev/null || { echo "docker-engine: import failed"; exit 1; }
    rm -rf "$root"
fi
echo "docker-engine: ready ($(docker version --format '{{.Server.Version}}'), base $base)"
