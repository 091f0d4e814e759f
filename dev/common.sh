# Sourced by the set-up scripts: the pinned installer, venvs built from lock files, the
# interfaces built with colcon as on a robot, and steps skipped while their inputs are unchanged.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '\033[1m[%s]\033[0m %s\n' "${LOG_TAG:-setup}" "$*"; }

# uv, at the version dev/requirements-bootstrap.lock pins (hash-checked by pip), in build/uv.
UV=$ROOT/build/uv/bin/uv
ensure_uv() {
  local want
  want=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "$ROOT/dev/requirements-bootstrap.lock")
  if [ -x "$UV" ] && [ "$("$UV" --version | cut -d' ' -f2)" = "$want" ]; then return 0; fi
  log "installing uv $want (dev/requirements-bootstrap.lock)"
  rm -rf "$ROOT/build/uv"
  python3 -m pip install -qq --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
    --target "$ROOT/build/uv" -r "$ROOT/dev/requirements-bootstrap.lock"
}

# pick_python VERSION: an interpreter of that minor version (PYTHON<major><minor> overrides).
pick_python() {
  local want=$1 var="PYTHON${1//./}" c
  for c in "${!var:-}" "python$want" "$HOME/.pyenv/versions/$want"*/bin/python"$want"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}

# step STAMPS NAME INPUT_FILES... -- COMMAND...: run COMMAND unless the inputs are unchanged.
step() {
  local stamps=$1 name=$2; shift 2
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local sum
  sum=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamps/$name" ] && [ "$(cat "$stamps/$name")" = "$sum" ]; then
    return 0
  fi
  log "$name"
  "$@"
  mkdir -p "$stamps"
  echo "$sum" > "$stamps/$name"
}

# venv_from_lock VENV PYTHON LOCK: create VENV if needed and make it exactly LOCK (hashes checked).
venv_from_lock() {
  local venv=$1 py=$2 lock=$3
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$UV" pip sync --quiet --python "$venv/bin/python" --require-hashes "$lock"
}

# build_interfaces VENV BUILD_BASE: colcon builds msg/ (and installs the package) into BUILD_BASE/install.
build_interfaces() {
  local venv=$1 base=$2
  (
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    # The wheels install share/ and lib/ under the venv prefix.
    export AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv
    cd "$ROOT"
    colcon --log-base "$base/log" build --base-paths "$ROOT" \
      --build-base "$base/colcon" --install-base "$base/install" \
      --event-handlers console_direct- summary+ \
      --cmake-args -DBUILD_TESTING=OFF \
        "-DPython3_EXECUTABLE=$venv/bin/python" \
        "-DCMAKE_PROJECT_INCLUDE=$ROOT/dev/pip_ros_fixups.cmake" \
      2> >(grep -v "doesn't contain any 'local_setup" >&2)
  )
}
