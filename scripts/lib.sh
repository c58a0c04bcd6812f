# Shared by scripts/demo and scripts/test: install what is missing, nothing more.
# Works on a fresh Debian 12 / Raspberry Pi OS (bookworm) as root or as a user with sudo.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GATEWAY_VENV:-$ROOT/.venv}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_debs PACKAGE... : apt-get install the packages that dpkg does not have yet.
ensure_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# ensure_venv EXTRAS : a virtual environment with the project installed (editable) and its extras.
ensure_venv() {
    local extras=$1
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        ensure_debs python3-venv
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$extras"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        touch "$stamp"
    fi
}
