# Stand-in for the SlicerConfig.cmake of a Slicer build tree, used by Testing/test_cmake_configure.py to configure
# the extension without Slicer: `cmake -S <repo> -B <build> -DSlicer_DIR=<this folder>`.
#
# It provides what the extension's CMake files use (Slicer_USE_FILE with slicerMacroBuildScriptedModule,
# ctkMacroCompilePythonScript and slicer_add_python_unittest; Slicer_EXTENSION_GENERATE_CONFIG; Slicer_EXTENSION_CPACK
# and the qt-scripted-modules folders). The macros stop where Slicer 5.6-5.10 and the CTK they pin stop (same
# checks, same messages) and, instead of building, write what would be installed and registered into
# ${CMAKE_BINARY_DIR}/standin-manifest.txt, one "<kind> <value>" per line.
set(Slicer_FOUND TRUE)
set(Slicer_VERSION "5.10.0")
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(Slicer_USE_PYTHONQT TRUE)
set(Slicer_REVISION "standin")
set(Slicer_OS "linux")
set(Slicer_ARCHITECTURE "amd64")
set(BUILD_TESTING ON)

set(SLICER_STANDIN_MANIFEST ${CMAKE_BINARY_DIR}/standin-manifest.txt)
file(WRITE ${SLICER_STANDIN_MANIFEST} "")
