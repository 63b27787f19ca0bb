# GPU forward tests (ctest label "gpu"): the forward's kernels against CPU twins, and the whole
# model on device "cuda" against the CPU reference. Exit 77 = skipped without a GPU.
if(SPECMOE_CUDA)
  specmoe_test(test_gpu_model_ops SOURCES gpu/test_model_ops.c LABELS gpu)
  specmoe_test(test_gpu_forward SOURCES gpu/test_forward.c LABELS gpu)
  specmoe_test(test_gpu_gemv SOURCES gpu/test_gemv.c LABELS gpu)
  # speculative decoding with sampling and verification on the device: greedy agreement on the
  # trained pair, and the CPU test's chi-square distribution checks run on "cuda"
  specmoe_test(test_gpu_spec SOURCES gpu/test_spec_gpu.c LABELS gpu)
  specmoe_test(test_gpu_spec_engine SOURCES unit/test_spec_engine.c LABELS gpu ARGS cuda)
  set_tests_properties(test_gpu_model_ops test_gpu_forward test_gpu_gemv test_gpu_spec test_gpu_spec_engine
                       PROPERTIES SKIP_RETURN_CODE 77)
endif()
