# Development-only: lets `colcon build` work against ROS 2 installed from PyPI
# wheels inside ./.venv. Passed as -DCMAKE_PROJECT_INCLUDE by dev/build_interfaces.sh;
# a normal ROS 2 install (apt, Humble/Jazzy/Kilted) never sees this file.
#
# 1. The wheels' exported *__rosidl_generator_py targets name include directories
#    of the machine that built them (/opt/python/cp311-cp311/...). Point them at
#    this interpreter's include dir and this venv's numpy.
# 2. The venvs (.venv, .venv-jazzy) live inside the source tree, so our own generated Python target
#    would export a numpy include path under the source dir, which CMake refuses
#    to install-export; keep such paths build-only.

function(_seg_perception_pip_ros_fixups)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include())"
    OUTPUT_VARIABLE _paths OUTPUT_STRIP_TRAILING_WHITESPACE)
  list(GET _paths 0 _py_include)
  list(GET _paths 1 _np_include)
  get_property(_imported DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _imported)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      string(REGEX REPLACE "/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\\.[0-9]+" "${_py_include}" _dirs "${_dirs}")
      string(REGEX REPLACE "/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\\.[0-9]+/site-packages/numpy/_core/include" "${_np_include}" _dirs "${_dirs}")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endforeach()
  get_property(_own DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_t IN LISTS _own)
    get_target_property(_type ${_t} TYPE)
    if(_type STREQUAL "INTERFACE_LIBRARY" OR _type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      set(_fixed "")
      foreach(_d IN LISTS _dirs)
        if(_d MATCHES "^${CMAKE_SOURCE_DIR}/\\.venv[^/]*/")
          list(APPEND _fixed "$<BUILD_INTERFACE:${_d}>")
        else()
          list(APPEND _fixed "${_d}")
        endif()
      endforeach()
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _seg_perception_pip_ros_fixups)
