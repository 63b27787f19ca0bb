# GPU forward tests (ctest label "gpu"): the forward's kernels against CPU twins, and the whole
# model on device "cuda" against the CPU reference. Exit 77 = skipped without a GPU.
if(SPECMOE_CUDA)
  specmoe_test(test_gpu_model_ops SOURCES gpu/test_model_ops.c LABELS gpu)
  specmoe_test(test_gpu_forward SOURCES gpu/test_forward.c LABELS gpu)
  specmoe_test(test_gpu_gemv SOURCES gpu/test_gemv.c LABELS gpu)
  set_tests_properties(test_gpu_model_ops test_gpu_forward test_gpu_gemv PROPERTIES SKIP_RETURN_CODE 77)
endif()
