# Compiler settings shared by every postal target: warnings, and the sanitizer build variants.

# postal_set_warnings(target): -Wall -Wextra -Wpedantic (and -Werror with POSTAL_WERROR) on postal's own code.
function(postal_set_warnings target)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    return()
  endif()
  # GCC 12's -Wmaybe-uninitialized reports bogus reads through std::variant / union members at -O2 (GCC
  # bug 80635, seen here when a std::variant holds a postal::expected); clang has no such false positive.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic $<$<BOOL:${POSTAL_WERROR}>:-Werror>
                                           $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
endfunction()

if(POSTAL_SANITIZER)
  if(NOT POSTAL_SANITIZER MATCHES "^(address,undefined|undefined,address|address|undefined|thread)$")
    message(FATAL_ERROR "POSTAL_SANITIZER must be 'address,undefined' or 'thread', not '${POSTAL_SANITIZER}'")
  endif()
  add_compile_options(-fsanitize=${POSTAL_SANITIZER} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${POSTAL_SANITIZER})
endif()
