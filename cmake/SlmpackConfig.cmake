# find_package(Slmpack CONFIG) entry point: point Slmpack_DIR (or CMAKE_PREFIX_PATH) at this folder.
include("${CMAKE_CURRENT_LIST_DIR}/Slmpack.cmake")
set(Slmpack_FOUND TRUE)
