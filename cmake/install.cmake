# SPDX-License-Identifier: Apache-2.0
# cmake/install.cmake — what `cmake --install BUILD --prefix P` puts under P:
#   include/tillsync/*.h            the public headers (version.h generated from project())
#   lib/libtillsync.so.N, .a        the library, shared (SONAME libtillsync.so.N) and static
#   lib/pkgconfig/tillsync.pc       for pkg-config (tillsync.pc.in)
#   lib/cmake/tillsync/             for find_package(tillsync): tillsync::tillsync (shared) and
#                                   tillsync::tillsync_static
#   bin/tillsync                    the tool
#   lib/tillsync/tillsync.so        the loadable SQLite extension (`.load .../tillsync`)
#   share/doc/tillsync/             LICENSE, and the service's example configuration
#   share/man/man1/tillsync.1, lib/systemd/system/tillsync@.service, lib/sysusers.d/tillsync.conf
#   lib/systemd/system/tillsync-relay.service, lib/sysusers.d/tillsync-relay.conf (the relay)
# Included from the top CMakeLists.txt; paths are relative to this project (add_subdirectory).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The installed tool finds the library of its own prefix (P/bin/../lib). A distribution package,
# whose libraries are on the system path, turns this off (lintian: custom-library-search-path).
option(TSYNC_INSTALL_RPATH "Give the installed tool a relative RUNPATH to its prefix's libdir" ON)
if(TSYNC_INSTALL_RPATH)
  file(RELATIVE_PATH tsync_bin_to_lib /${CMAKE_INSTALL_BINDIR} /${CMAKE_INSTALL_LIBDIR})
  set_target_properties(tillsync_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${tsync_bin_to_lib}")
endif()

install(TARGETS tillsync tillsync_static EXPORT tillsyncTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tillsync_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tool)
# In a folder of its own: `.load P/lib/tillsync/tillsync` names it without a lib prefix, and
# nothing links it (docs/SQLITE_EXTENSION.md).
install(TARGETS tillsync_ext LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/tillsync
  COMPONENT runtime)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tillsync ${TSYNC_GENERATED_INCLUDE}/tillsync
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT runtime)

# tillsync.pc. Cflags name only our own include folder: no public header includes a dependency's
# header, so an app compiling against tillsync needs none of theirs (libzmq's .pc alone would add
# three -I). That is why the dependencies are listed in Libs.private as the linker flags their
# own .pc files gave (pkg-config --libs), not in Requires.private, whose Cflags
# pkg-config adds to --cflags even for a shared build.
# A library folder the linker searches anyway is left out (pkg-config reports it as -L).
set(tsync_pc_libs_private)
foreach(prefix SQLITE3 SODIUM MSGPACK ZSTD JANSSON ZMQ MHD AVAHI NATS)
  if(${prefix}_FOUND)
    foreach(d ${${prefix}_LIBRARY_DIRS})
      if(NOT d IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES AND NOT d MATCHES "^/usr/lib/?$")
        list(APPEND tsync_pc_libs_private -L${d})
      endif()
    endforeach()
    foreach(l ${${prefix}_LIBRARIES})
      list(APPEND tsync_pc_libs_private -l${l})
    endforeach()
    list(APPEND tsync_pc_libs_private ${${prefix}_LDFLAGS_OTHER})
  endif()
endforeach()
list(APPEND tsync_pc_libs_private -lcsv -pthread)
list(REMOVE_DUPLICATES tsync_pc_libs_private)
string(REPLACE ";" " " TSYNC_PC_LIBS_PRIVATE "${tsync_pc_libs_private}")
# The prefix is the install's (cmake --install --prefix P), known only when installing.
configure_file(${PROJECT_SOURCE_DIR}/cmake/tillsync.pc.in ${PROJECT_BINARY_DIR}/tillsync.pc.in
  @ONLY)
install(CODE "
  file(READ \"${PROJECT_BINARY_DIR}/tillsync.pc.in\" pc)
  string(REPLACE \"%TSYNC_PREFIX%\" \"\${CMAKE_INSTALL_PREFIX}\" pc \"\${pc}\")
  file(WRITE \"${PROJECT_BINARY_DIR}/pkgconfig/tillsync.pc\" \"\${pc}\")" COMPONENT dev)
install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/tillsync.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# The CMake package. tillsyncConfig.cmake makes the targets the static library's link interface
# names (PkgConfig::*, Threads::Threads) before loading tillsyncTargets.cmake.
set(TSYNC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tillsync)
install(EXPORT tillsyncTargets NAMESPACE tillsync:: DESTINATION ${TSYNC_CMAKE_DIR} COMPONENT dev)
set(TSYNC_CONFIG_MDNS ${TSYNC_MDNS})
set(TSYNC_CONFIG_MSGPACK_MODULE ${MSGPACK_MODULE_NAME})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tillsyncConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tillsyncConfig.cmake INSTALL_DESTINATION ${TSYNC_CMAKE_DIR})
# 0.x: a minor release may change the API (docs/API.md), so only the same MAJOR.MINOR matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tillsyncConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tillsyncConfig.cmake
  ${PROJECT_BINARY_DIR}/tillsyncConfigVersion.cmake DESTINATION ${TSYNC_CMAKE_DIR} COMPONENT dev)

# The service (tools/, packaging/): tillsync(1) generated from the tool's help text, the systemd
# template unit with this prefix's bindir, the system user, and the example configuration.
set(TSYNC_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
  "where the systemd unit is installed (relative: under the prefix)")
set(TSYNC_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING
  "where the sysusers.d entry is installed (relative: under the prefix)")
if(TARGET tillsync_man)
  install(FILES ${PROJECT_BINARY_DIR}/tillsync.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1
    COMPONENT tool)
endif()
# The unit names the installed tool: the prefix is known only when installing (as for the .pc).
install(CODE "
  file(READ \"${PROJECT_SOURCE_DIR}/packaging/systemd/tillsync@.service.in\" unit)
  string(REPLACE \"@CMAKE_INSTALL_FULL_BINDIR@\" \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\"
    unit \"\${unit}\")
  file(WRITE \"${PROJECT_BINARY_DIR}/systemd/tillsync@.service\" \"\${unit}\")" COMPONENT tool)
install(FILES ${PROJECT_BINARY_DIR}/systemd/tillsync@.service
  DESTINATION ${TSYNC_SYSTEMD_UNIT_DIR} COMPONENT tool)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/tillsync.sysusers.conf
  DESTINATION ${TSYNC_SYSUSERS_DIR} RENAME tillsync.conf COMPONENT tool)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/tillsync.conf.example
  DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT tool)
# The blind relay's unit (docs/RELAY.md) and its system user, made the same way.
install(CODE "
  file(READ \"${PROJECT_SOURCE_DIR}/packaging/systemd/tillsync-relay.service.in\" unit)
  string(REPLACE \"@CMAKE_INSTALL_FULL_BINDIR@\" \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\"
    unit \"\${unit}\")
  file(WRITE \"${PROJECT_BINARY_DIR}/systemd/tillsync-relay.service\" \"\${unit}\")" COMPONENT tool)
install(FILES ${PROJECT_BINARY_DIR}/systemd/tillsync-relay.service
  DESTINATION ${TSYNC_SYSTEMD_UNIT_DIR} COMPONENT tool)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/tillsync-relay.sysusers.conf
  DESTINATION ${TSYNC_SYSUSERS_DIR} RENAME tillsync-relay.conf COMPONENT tool)
