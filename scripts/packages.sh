# Sourced by setup.sh and gpu_bundle.sh: the Debian packages the build needs.
# shellcheck shell=bash
# Compilers and tools (a GPU machine brings its own).
RZ_TOOL_PACKAGES=(build-essential cmake ninja-build)
# The development packages of our dependencies (headers, CMake configs).
RZ_DEV_PACKAGES=(doctest-dev libstb-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev)
# Their run-time libraries, which a bundle must carry too (apt installs
# them as dependencies).
RZ_RUNTIME_PACKAGES=(libstb0 libtomlplusplus3)
