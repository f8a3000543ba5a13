#!/usr/bin/env bash
# Installs the system tools Flare needs when they are missing: bubblewrap
# (the sandbox), python3 and node (the language workers), runsc (gVisor,
# for `--isolation gvisor`), a JDK (the Java worker), npm and chromium (the
# console's build and browser test). setpriv comes with util-linux. Needs
# root and Debian's apt.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v setpriv >/dev/null || need+=(util-linux)
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/bin/node ] || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The console's browser test drives Debian's Chromium.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v runsc >/dev/null || need+=(runsc)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
