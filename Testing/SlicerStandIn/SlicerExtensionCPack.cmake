# Stand-in for Slicer's SlicerExtensionCPack.cmake (see SlicerConfig.cmake in this folder): the same checks (name,
# README and LICENSE files that exist), then the extension description entries go into the manifest instead of a
# .s4ext file.
foreach(var EXTENSION_NAME Slicer_REVISION Slicer_OS Slicer_ARCHITECTURE)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "error: ${var} is either NOT defined or empty.")
  endif()
endforeach()
foreach(var EXTENSION_README_FILE EXTENSION_LICENSE_FILE)
  if(NOT EXISTS "${${var}}")
    message(FATAL_ERROR "error: ${var} points to an inexistent file: ${${var}}")
  endif()
endforeach()
foreach(var EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION EXTENSION_ICONURL
            EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS EXTENSION_README_FILE EXTENSION_LICENSE_FILE)
  foreach(value ${${var}})
    _standin_record(${var} "${value}")
  endforeach()
endforeach()
