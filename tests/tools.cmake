# Developer tools under scripts/ (the PDL trace report of kernels/pdl_trace.h).
specmoe_script_test(test_pdl_trace_report tests/scripts/test_pdl_trace_report.sh)
