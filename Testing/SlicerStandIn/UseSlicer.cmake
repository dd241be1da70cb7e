# Stand-in for Slicer's UseSlicer.cmake (see SlicerConfig.cmake in this folder).

# UseSlicer names the extension after the project and, unless the extension set them, packages Slicer's own README
# and LICENSE; the stand-in has none, so an extension that does not name its own files fails in the CPack step.
if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME ${PROJECT_NAME})
endif()

function(_standin_record kind value)
  file(APPEND ${SLICER_STANDIN_MANIFEST} "${kind} ${value}\n")
endfunction()

# CTK's ctkMacroCompilePythonScript: TARGET_NAME, SCRIPTS, DESTINATION_DIR and INSTALL_DIR are mandatory (an empty
# SCRIPTS list is as good as none: "SCRIPTS is mandatory"); sources are SOURCE_DIR-relative (default: the current
# source folder); scripts get ".py" appended when their name has no py extension; the content of DESTINATION_DIR is
# installed into INSTALL_DIR (with NO_INSTALL_SUBDIR) or into INSTALL_DIR/<last component of DESTINATION_DIR>.
# The real macro copies each file at build time and stops there when a source is missing; the stand-in checks it
# now. It also refuses two targets that install the same path (their copies would overwrite each other).
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" ""
    "TARGET_NAME;SCRIPTS;RESOURCES;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" ${ARGN})
  foreach(varname TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${varname})
      message(FATAL_ERROR "${varname} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  set(_standin_install_root ${MY_INSTALL_DIR})
  if(NOT MY_NO_INSTALL_SUBDIR)
    get_filename_component(_standin_subdir ${MY_DESTINATION_DIR} NAME)
    set(_standin_install_root ${MY_INSTALL_DIR}/${_standin_subdir})
  endif()
  set(_standin_entries)
  foreach(_standin_file ${MY_SCRIPTS})
    get_filename_component(_standin_ext ${_standin_file} EXT)
    if(NOT "${_standin_ext}" MATCHES "py")
      set(_standin_file "${_standin_file}.py")
    endif()
    list(APPEND _standin_entries ${_standin_file})
  endforeach()
  list(APPEND _standin_entries ${MY_RESOURCES})
  foreach(_standin_file ${_standin_entries})
    if(IS_ABSOLUTE ${_standin_file})
      set(_standin_src ${_standin_file})
      file(RELATIVE_PATH _standin_file ${CMAKE_CURRENT_BINARY_DIR} ${_standin_src})
    else()
      set(_standin_src ${MY_SOURCE_DIR}/${_standin_file})
    endif()
    if(NOT EXISTS ${_standin_src})
      message(FATAL_ERROR "${MY_TARGET_NAME}: no rule to copy '${_standin_src}' (file does not exist)")
    endif()
    get_property(_standin_owner GLOBAL PROPERTY "_standin_installed:${_standin_install_root}/${_standin_file}")
    if(_standin_owner)
      message(FATAL_ERROR "${MY_TARGET_NAME} and ${_standin_owner} both install ${_standin_install_root}/${_standin_file}")
    endif()
    set_property(GLOBAL PROPERTY "_standin_installed:${_standin_install_root}/${_standin_file}" ${MY_TARGET_NAME})
    _standin_record(install "${_standin_install_root}/${_standin_file} ${_standin_src}")
  endforeach()
endmacro()

# Slicer's slicerMacroBuildScriptedModule: NAME is mandatory, unknown keywords and nonexistent SCRIPTS/RESOURCES
# entries (relative to the module folder, scripts also with ".py" appended) stop the configuration; then the files
# go to qt-scripted-modules/ through ctkMacroCompilePythonScript.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  foreach(_standin_var SCRIPTS RESOURCES)
    foreach(_standin_value ${MY_SLICER_${_standin_var}})
      if(IS_ABSOLUTE ${_standin_value})
        set(_standin_abs ${_standin_value})
      else()
        set(_standin_abs ${CMAKE_CURRENT_SOURCE_DIR}/${_standin_value})
      endif()
      if(NOT EXISTS ${_standin_abs} AND NOT EXISTS ${_standin_abs}.py)
        message(FATAL_ERROR
          "slicerMacroBuildScriptedModule(${_standin_var}) given nonexistent file or directory '${_standin_value}'")
      endif()
    endforeach()
  endforeach()
  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR "Attempting to build the Python scripted module '${MY_SLICER_NAME}' when Slicer_USE_PYTHONQT is OFF")
  endif()
  _standin_record(module ${MY_SLICER_NAME})
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR
    )
endmacro()

# Slicer's slicer_add_python_unittest: registers ctest "py_<script name>" running the script (relative to the
# current source folder) in Slicer; the stand-in also checks that the script exists.
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  if(NOT DEFINED MY_SCRIPT)
    message(FATAL_ERROR "slicer_add_python_unittest: SCRIPT is mandatory")
  endif()
  get_filename_component(_standin_test_name ${MY_SCRIPT} NAME_WE)
  if(NOT IS_ABSOLUTE ${MY_SCRIPT})
    set(MY_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
  endif()
  if(NOT EXISTS ${MY_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: '${MY_SCRIPT}' does not exist")
  endif()
  _standin_record(test "py_${MY_TESTNAME_PREFIX}${_standin_test_name} ${MY_SCRIPT}")
endmacro()
