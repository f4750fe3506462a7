# Registers the install test with ctest; include() this from tests/CMakeLists.txt.
# The test installs this build tree into a temporary prefix and builds
# tests/install/consumer.c against it with pkg-config and with find_package.
# It needs the built libraries, so run it after the build (ctest does).
add_test(NAME install_consumer
  COMMAND ${CMAKE_SOURCE_DIR}/tests/install/run.sh ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
set_tests_properties(install_consumer PROPERTIES
  SKIP_RETURN_CODE 77
  ENVIRONMENT "CMAKE=${CMAKE_COMMAND}"
  TIMEOUT 300)
