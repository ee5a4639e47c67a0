#!/usr/bin/env bash
# Installs what the embedded targets need when it is missing: the ARM GNU toolchain with newlib,
# QEMU's ARM system emulator, CMake, and headless Chromium for the report tests (Debian/Ubuntu
# packages, no recommends). As root it installs directly, with passwordless sudo through sudo; otherwise it
# prints the exact command and fails.
set -euo pipefail

need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1 || [ ! -f "$(arm-none-eabi-gcc -print-file-name=libc.a)" ]; then
  need+=(libnewlib-arm-none-eabi)
fi
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
# the generated folder's CMakeLists.txt is built by the tests (docs/integration.md)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
# headless Chromium renders analyze's HTML report in the tests; best effort (a distribution without
# the package gets a warning, and those tests say they were skipped and why)
optional=()
command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || optional+=(chromium-headless-shell)
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${need[*]} ${optional[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "nupes-edge needs: ${need[*]}" >&2
  echo "install them with: sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
echo "installing ${need[*]} ${optional[*]} (apt, --no-install-recommends) ..." >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
if [ ${#need[@]} -gt 0 ]; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -qq "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ] && ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -qq "${optional[@]}" >/dev/null 2>&1; then
  echo "warning: could not install ${optional[*]}: the HTML report rendering tests will be skipped" >&2
fi
