# Source me: the development venv plus the colcon install tree (generated messages).
_seg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$_seg_root/.venv/bin/activate"
export AMENT_PREFIX_PATH=$_seg_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
# shellcheck disable=SC1091
source "$_seg_root/build/install/setup.bash"
unset _seg_root
# The source tree comes first so edits take effect without a rebuild; the
# package extends its path to pick up the generated messages from the install tree.
_seg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$_seg_root${PYTHONPATH:+:$PYTHONPATH}
unset _seg_root
