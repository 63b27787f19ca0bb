/* kernels/pdl_trace.h — a timeline of the step's kernels where no system profiler runs.
 *
 * The GPU boxes have Nsight Compute but no working Nsight Systems, and Nsight Compute serialises
 * kernels, so it cannot show what programmatic dependent launch (PDL) overlaps. In a build
 * configured with -DSPECMOE_PDL_TRACE=ON, thread 0 of every block of every kernel that calls
 * sm_pdl_trigger / sm_pdl_wait (kernel_common.cuh; every kernel of our decode step) records the
 * GPU's global timer at the trigger and just before and after the wait, with the grid's launch
 * number (%gridid), its block, grid size and SM. Per kernel, the earliest time its wait returned is
 * when the kernel before it completed; its blocks' trigger times show whether they were resident
 * early (requesting weights) or only after the previous kernel left. scripts/pdl_trace_report.py
 * turns a dump into per-kernel times. Without the option the hooks compile to nothing and these
 * functions return SM_EINVAL. */
#ifndef SM_PDL_TRACE_H
#define SM_PDL_TRACE_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build records (configured with -DSPECMOE_PDL_TRACE=ON). */
bool sm_cuda_pdl_trace_built(void);

/* Allocates the record buffer on the current device the first time, then empties it: records
 * start from here. Synchronises the device. */
sm_status sm_cuda_pdl_trace_start(sm_error *err);

/* Waits for the device, then writes the records since sm_cuda_pdl_trace_start to `path` as text,
 * one per line: grid block grid_blocks sm kind(0 trigger, 1 wait) t_before t_after (ns of the
 * global timer). Says so in the file's first line if the buffer overflowed. */
sm_status sm_cuda_pdl_trace_dump(const char *path, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
