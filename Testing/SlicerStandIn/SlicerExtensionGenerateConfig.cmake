# Stand-in for Slicer's SlicerExtensionGenerateConfig.cmake (see SlicerConfig.cmake in this folder): records the
# extension's name.
_standin_record(extension_name ${EXTENSION_NAME})
