# slmpack build steps for CMake (>= 3.19).
#
#   find_package(Slmpack CONFIG)   # or: list(APPEND CMAKE_MODULE_PATH <slmpack>/cmake) + include(Slmpack)
#   slmpack_add_package(NAME models RECIPE ${CMAKE_SOURCE_DIR}/slmpack.toml
#                       OUTPUT_DIR ${CMAKE_BINARY_DIR}/models
#                       [PACKAGES chat/onnx ...] [CACHE_DIR dir] [SLMPACK /path/to/slmpack])
#
# At configure time `slmpack build --list --json` names each package's output folder and every
# input file (checkpoint, tokenizer, chat template, data files, the recipe). Each package becomes a
# custom command whose DEPENDS are those files and whose OUTPUT is a stamp file, so `make` re-runs
# slmpack only when an input changed, and slmpack's content-addressed cache then re-exports only
# the packages whose inputs really changed. A recipe edit re-configures (CMAKE_CONFIGURE_DEPENDS).
# Sets <NAME>_PACKAGE_DIRS to the package folders (e.g. to install into an app bundle).

function(slmpack_add_package)
  cmake_parse_arguments(SLM "" "NAME;RECIPE;OUTPUT_DIR;CACHE_DIR" "PACKAGES;SLMPACK" ${ARGN})
  foreach(req NAME RECIPE OUTPUT_DIR)
    if(NOT SLM_${req})
      message(FATAL_ERROR "slmpack_add_package: ${req} is required")
    endif()
  endforeach()
  if(NOT SLM_SLMPACK)
    if(SLMPACK_COMMAND)
      set(SLM_SLMPACK ${SLMPACK_COMMAND})
    else()
      find_program(SLMPACK_EXECUTABLE slmpack REQUIRED)
      set(SLM_SLMPACK ${SLMPACK_EXECUTABLE})
    endif()
  endif()
  get_filename_component(recipe "${SLM_RECIPE}" ABSOLUTE)
  set(common build "${recipe}" --out "${SLM_OUTPUT_DIR}")
  if(SLM_CACHE_DIR)
    list(APPEND common --cache "${SLM_CACHE_DIR}")
  endif()
  set(only "")
  foreach(p ${SLM_PACKAGES})
    list(APPEND only --only "${p}")
  endforeach()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${recipe}")
  execute_process(COMMAND ${SLM_SLMPACK} ${common} ${only} --list --json
                  OUTPUT_VARIABLE listing ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "slmpack build --list failed (${rc}): ${err}")
  endif()
  string(JSON n LENGTH "${listing}" packages)
  set(stamps "")
  set(dirs "")
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON label GET "${listing}" packages ${i} package)
    string(JSON path GET "${listing}" packages ${i} path)
    string(JSON ni LENGTH "${listing}" packages ${i} inputs)
    math(EXPR lasti "${ni} - 1")
    set(inputs "")
    foreach(j RANGE ${lasti})
      string(JSON f GET "${listing}" packages ${i} inputs ${j})
      list(APPEND inputs "${f}")
    endforeach()
    set(stamp "${CMAKE_CURRENT_BINARY_DIR}/slmpack-stamps/${label}.stamp")
    add_custom_command(OUTPUT "${stamp}"
      COMMAND ${SLM_SLMPACK} ${common} --only "${label}" --stamp "${stamp}"
      DEPENDS ${inputs}
      COMMENT "slmpack: ${label} -> ${path}"
      VERBATIM)
    list(APPEND stamps "${stamp}")
    list(APPEND dirs "${path}")
  endforeach()
  add_custom_target(${SLM_NAME} ALL DEPENDS ${stamps})
  set(${SLM_NAME}_PACKAGE_DIRS ${dirs} PARENT_SCOPE)
endfunction()
