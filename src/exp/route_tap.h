/* src/exp/route_tap.h — routing statistics (moe_layer_events) and route traces (route_traces)
 * of the models an engine runs, collected during a step and written after it, when the
 * requests the rows belong to are known.
 *
 * The target is watched through the engine's public route observer (sm_spec_set_route_observer),
 * which says what every row of a target forward is (sequence, position, prefill/decode/verify);
 * the draft model, which the engine does not observe, through its own sm_route_observer. */
#ifndef SM_EXP_ROUTE_TAP_H
#define SM_EXP_ROUTE_TAP_H

#include <stdbool.h>

#include "exp/recorder.h"
#include "model/model.h"
#include "spec/spec.h"

typedef struct sm_route_tap sm_route_tap;

/* draft may be NULL. Observes the engine's target (and the draft) until freed. */
sm_status sm_route_tap_create(sm_spec_engine *engine, sm_model *target, sm_model *draft, bool record_routes,
                              sm_route_tap **out, sm_error *err);
void sm_route_tap_free(sm_route_tap *t);

/* Writes what the last step routed. Sequences' user pointers are sm_request_state. */
sm_status sm_route_tap_flush(sm_route_tap *t, sm_recorder *rec, const sm_spec_step_metrics *m, sm_error *err);

#endif
