#!/usr/bin/env bash
# Installs the Debian packages Shoal needs on a machine of this kind (Debian bookworm,
# run as root). Idempotent: packages already present are left alone.
#
#   skopeo       OCI tool the store is proven against (push/pull round trips), and the
#                peer in the pull-throughput benchmark
#   docker-registry  the reference registry (CNCF distribution) the store's push/pull
#                benchmark compares against (bench/store.ts starts it on loopback)
#   debootstrap  builds the template://debian/bookworm template
#   runc         the container driver (namespaces, cgroups, seccomp)
#   attr         setfattr: marks opaque directories in unpacked layers for overlayfs
#   gcc, libc6-dev  compiles the small runc shim (reaps containers, keeps exit codes)
#   nginx-light  the peer in the forwarding benchmark, and the overlay-size table's
#                "nginx on debian" row installs it inside the template
#   wrk          load generator for the benchmarks
#   iproute2     `ip` for inspecting network namespaces in tests
#   chromium     the browser the dashboard's tests drive (playwright-core, test/dashboard/)
#   apache2-utils  htpasswd: the bring-your-own-image test gives docker-registry a bcrypt
#                password (basic auth) to log in with
#   qemu-system-x86  the vm driver's virtual machines (TCG, or KVM where a guest boots with it)
#   qemu-utils   qemu-img: the vm driver's qcow2 root templates and per-instance overlays
#   e2fsprogs    mke2fs -d and debugfs: the vm root disk from unpacked layers, without a mount
#   xz-utils     decompresses the Debian kernel for the vm driver's PVH boot
#   zstd         compresses a VM's saved RAM at a capture and decompresses it at a restore
set -euo pipefail

packages=(skopeo docker-registry debootstrap runc attr gcc libc6-dev nginx-light wrk iproute2 apache2-utils ca-certificates chromium qemu-system-x86 qemu-utils e2fsprogs xz-utils zstd)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-system: all packages present"
fi

# docker-registry's package enables a service listening on :5000 on every interface;
# the benchmark starts its own on loopback, so the service is turned off.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || echo "setup-system: could not disable the docker-registry service; stop it by hand" >&2
fi

# PostgreSQL: the provider's registry can live in it (SHOAL_DATABASE_URL); the tests run
# the same registry suite against SQLite and against this server.
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed'; then
  echo "setup-system: installing postgresql"
  apt-get install -y -qq --no-install-recommends postgresql
fi
