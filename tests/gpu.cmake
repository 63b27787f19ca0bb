# GPU tests (ctest label "gpu"): kernels against their CPU twins, the GPU MoE runners against
# `ref`, full-model logits with each GPU runner. Built only with CUDA; on a machine without a GPU
# they exit 77 and ctest reports them Skipped (SPECMOE_REQUIRE_GPU=1 turns that into a failure).
if(SPECMOE_CUDA)
  specmoe_test(test_gpu_kernels SOURCES gpu/test_kernels.c LABELS gpu)
  specmoe_test(test_gpu_runners SOURCES gpu/test_runners.c LABELS gpu)
  specmoe_test(test_gpu_model SOURCES gpu/test_model.c LABELS gpu)
  specmoe_test(test_gpu_sample SOURCES gpu/test_sample.c LABELS gpu)
  specmoe_test(test_gpu_fused_ops SOURCES gpu/test_fused_ops.c LABELS gpu)
  set_tests_properties(test_gpu_kernels test_gpu_runners test_gpu_model test_gpu_sample test_gpu_fused_ops PROPERTIES SKIP_RETURN_CODE 77)
endif()
