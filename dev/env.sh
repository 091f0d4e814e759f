# Source me: the development venv plus the colcon install tree (generated messages).
#   source dev/env.sh          ROS 2 Kilted (.venv, build/install)
#   source dev/env.sh jazzy    ROS 2 Jazzy  (.venv-jazzy, build/jazzy/install)
_seg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-kilted} in
  jazzy) _seg_venv=$_seg_root/.venv-jazzy; _seg_build=$_seg_root/build/jazzy ;;
  *) _seg_venv=$_seg_root/.venv; _seg_build=$_seg_root/build ;;
esac
# shellcheck disable=SC1091
source "$_seg_venv/bin/activate"
export AMENT_PREFIX_PATH=$_seg_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
# shellcheck disable=SC1091
source "$_seg_build/install/setup.bash"
# The source tree comes first so edits take effect without a rebuild; the
# package extends its path to pick up the generated messages from the install tree.
export PYTHONPATH=$_seg_root${PYTHONPATH:+:$PYTHONPATH}
unset _seg_root _seg_venv _seg_build
