#!/usr/bin/env bash
# Installs the Debian packages specmoe needs to build and test, skipping those already there.
# Sourced by setup.sh and test.sh; run as root (or with sudo available).
specmoe_install_deps() {
    local packages=(build-essential cmake pkg-config git liblua5.4-dev libsqlite3-dev sqlite3
                    libjansson-dev libpcre2-dev "$@")
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
