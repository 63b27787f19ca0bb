# Fuzzing (label "fuzz"). Each target defines int fuzz_one(const uint8_t *, size_t) in
# tests/fuzz/fuzz_<x>.c; tests/fuzz/fuzz_driver.c runs it on the seed files plus a fixed number of
# seeded mutants (a few seconds; run it under SPECMOE_SANITIZE=ON to catch memory errors).
#
# SPECMOE_FUZZ=ON (clang; use its own build directory) also builds <name>_libfuzzer binaries for
# open-ended runs, e.g.  build-fuzz/tests/fuzz_tokenizer_libfuzzer -max_total_time=600 \
#                          tests/fixtures/tokenizers tests/fuzz/corpus/tokenizer_text
if(SPECMOE_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SPECMOE_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_C_COMPILER=clang")
  endif()
  # Coverage for libFuzzer in the library; the sanitizer runtimes supply the hooks to every
  # other binary that links it.
  target_compile_options(specmoe_lib PRIVATE -fsanitize=fuzzer-no-link)
  target_link_options(specmoe_lib INTERFACE -fsanitize=fuzzer-no-link)
  if(NOT SPECMOE_SANITIZE)
    target_compile_options(specmoe_lib PUBLIC -fsanitize=address,undefined)
    target_link_options(specmoe_lib INTERFACE -fsanitize=address,undefined)
  endif()
endif()

function(specmoe_fuzz name)
  cmake_parse_arguments(F "" "ITERATIONS" "SEEDS" ${ARGN})
  specmoe_test(${name} SOURCES fuzz/${name}.c fuzz/fuzz_driver.c LABELS fuzz
               ARGS --iterations ${F_ITERATIONS} --seed 1 ${F_SEEDS})
  if(SPECMOE_FUZZ)
    add_executable(${name}_libfuzzer fuzz/${name}.c fuzz/fuzz_driver.c)
    target_compile_definitions(${name}_libfuzzer PRIVATE SPECMOE_LIBFUZZER)
    target_compile_options(${name}_libfuzzer PRIVATE -fsanitize=fuzzer)
    target_link_options(${name}_libfuzzer PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name}_libfuzzer PRIVATE specmoe_lib)
  endif()
endfunction()

specmoe_fuzz(fuzz_tokenizer ITERATIONS 3000
             SEEDS --ext .json tests/fixtures/tokenizers --ext .txt tests/fuzz/corpus/tokenizer_text)
specmoe_fuzz(fuzz_safetensors ITERATIONS 20000
             SEEDS --ext .safetensors tests/fixtures/loader/st tests/fixtures/loader/ckpt)
specmoe_fuzz(fuzz_config ITERATIONS 30000
             SEEDS --ext .json tests/fixtures/loader/configs)
