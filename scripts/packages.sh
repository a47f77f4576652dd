# Sourced by setup.sh and gpu_bundle.sh: the Debian packages the build needs.
# shellcheck shell=bash
# Compilers and tools (a GPU machine brings its own).
RZ_TOOL_PACKAGES=(build-essential cmake ninja-build)
# The reliability stages of test.sh (a GPU machine does not run them):
# clang with libFuzzer and its sanitizer runtimes (libclang-rt-14-dev), its
# OpenMP runtime, and llvm-symbolizer (llvm-14) for symbolized sanitizer
# stacks. GCC's ASan/UBSan runtimes come with build-essential.
# python3 runs tools/results_tables.py --check (bench/RESULTS.md against its
# raw files; standard library only).
RZ_CHECK_PACKAGES=(clang-14 libclang-rt-14-dev libomp-14-dev llvm-14 python3)
# The development packages of our dependencies (headers, CMake configs).
# OpenMPI launches data-parallel runs (mpirun) and carries their CPU
# collectives; a build without it trains in one process.
RZ_DEV_PACKAGES=(doctest-dev libstb-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev openmpi-bin
                 libopenmpi-dev)
# Their run-time libraries, which a bundle must carry too (apt installs
# them as dependencies).
RZ_RUNTIME_PACKAGES=(libstb0 libtomlplusplus3)
