#!/usr/bin/env bash
# Installs what postal needs, builds it and runs its tests: the whole suite in a normal build and under
# AddressSanitizer+UndefinedBehaviorSanitizer, the CAF-free channel tests under ThreadSanitizer, a
# consumer project built against an installed postal (find_package), and the libFuzzer targets for a bounded
# time (POSTAL_FUZZ_SECONDS, default 60, per target). This is the command CI runs.
# usage: scripts/test.sh [normal] [asan] [tsan] [consumer] [fuzz]      (no argument: all five, in that order)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"

stages=("$@")
((${#stages[@]})) || stages=(normal asan tsan consumer fuzz)
jobs=${POSTAL_JOBS:-$(nproc)}

# configure_and_build DIR CMAKE_ARGS...: one build tree per variant, warnings as errors.
configure_and_build() {
  local dir=$1; shift
  cmake -S "$root" -B "$root/$dir" -G Ninja -DPOSTAL_WERROR=ON "$@" >/dev/null
  cmake --build "$root/$dir" -j "$jobs"
}
run_tests() {
  ctest --test-dir "$root/$1" --output-on-failure --no-tests=error -j "$jobs" "${@:2}"
}

for stage in "${stages[@]}"; do
  echo "=== postal tests: $stage ==="
  case $stage in
    normal)
      configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
      run_tests build ;;
    asan)
      configure_and_build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTAL_SANITIZER=address,undefined \
        -DPOSTAL_BUILD_BENCH=OFF -DPOSTAL_BUILD_SAMPLES=OFF
      ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        LSAN_OPTIONS="suppressions=$root/scripts/lsan-suppressions.txt" run_tests build-asan ;;
    tsan)
      # Debian's CAF is not built with ThreadSanitizer (false reports inside libcaf_core), so only the
      # CAF-free layer runs under it.
      configure_and_build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTAL_SANITIZER=thread \
        -DPOSTAL_MAILBOXES_ONLY=ON
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_tests build-tsan ;;
    consumer)
      [[ -d "$root/build" ]] || configure_and_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
      prefix="$root/build/consumer-prefix"
      rm -rf "$prefix" "$root/build/consumer"
      cmake --install "$root/build" --prefix "$prefix" >/dev/null
      cmake -S "$root/tests/consumer" -B "$root/build/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
      cmake --build "$root/build/consumer"
      "$root/build/consumer/postal_consumer" ;;
    fuzz)
      # libFuzzer needs clang, so the fuzz targets are a project of their own (tests/fuzz). Each run starts
      # from a scratch copy of the checked-in seeds, so what it discovers stays out of the checkout; a
      # crashing input is written to build-fuzz/ (crash-<sha1>), to replay with the fuzzer binary.
      cmake -S "$root/tests/fuzz" -B "$root/build-fuzz" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DPOSTAL_WERROR=ON \
        >/dev/null
      cmake --build "$root/build-fuzz" -j "$jobs"
      for target in config_loader_fuzz:config resp_parser_fuzz:resp; do
        corpus="$root/build-fuzz/corpus/${target#*:}"
        rm -rf "$corpus"
        mkdir -p "$corpus"
        cp "$root/tests/fuzz/corpus/${target#*:}/"* "$corpus/"
        UBSAN_OPTIONS=print_stacktrace=1 "$root/build-fuzz/${target%%:*}" \
          -max_total_time="${POSTAL_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -artifact_prefix="$root/build-fuzz/" \
          "$corpus"
      done ;;
    *)
      echo "unknown stage '$stage' (expected normal, asan, tsan, consumer or fuzz)" >&2
      exit 2 ;;
  esac
done
echo "=== postal tests: all requested stages passed ==="
