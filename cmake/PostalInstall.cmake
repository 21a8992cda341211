# Installs postal's headers (merged into one include/postal/), libraries, and a CMake package so that
# find_package(postal) in another project gives postal::mailboxes, postal::net, postal::actors and
# postal::patterns and postal::cluster.
include(CMakePackageConfigHelpers)

set(POSTAL_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/postal")

install(DIRECTORY mailboxes/include/ actors/include/ actors/net/include/ patterns/include/ patterns/cluster/include/
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" FILES_MATCHING PATTERN "*.hpp")
install(TARGETS postal_mailboxes postal_net postal_actors postal_patterns postal_cluster EXPORT postal-targets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT postal-targets NAMESPACE postal:: DESTINATION "${POSTAL_CMAKE_INSTALL_DIR}")

configure_package_config_file(cmake/postal-config.cmake.in "${CMAKE_CURRENT_BINARY_DIR}/postal-config.cmake"
  INSTALL_DESTINATION "${POSTAL_CMAKE_INSTALL_DIR}")
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/postal-config-version.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/postal-config.cmake" "${CMAKE_CURRENT_BINARY_DIR}/postal-config-version.cmake"
              cmake/FindCAF.cmake
        DESTINATION "${POSTAL_CMAKE_INSTALL_DIR}")
