#!/usr/bin/env bash
# Installs what the embedded targets need when it is missing: the ARM GNU toolchain with newlib,
# and QEMU's ARM system emulator (Debian/Ubuntu packages, no recommends). As root it installs
# directly, with passwordless sudo through sudo; otherwise it prints the exact command and fails.
set -euo pipefail

need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1 || [ ! -f "$(arm-none-eabi-gcc -print-file-name=libc.a)" ]; then
  need+=(libnewlib-arm-none-eabi)
fi
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
[ ${#need[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "nupes-edge needs: ${need[*]}" >&2
  echo "install them with: sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
echo "installing ${need[*]} (apt, --no-install-recommends) ..." >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive $cmd -qq >/dev/null
