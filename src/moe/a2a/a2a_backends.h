/* src/moe/a2a/a2a_backends.h — the a2a backends the registry knows (internal header). */
#ifndef SM_A2A_BACKENDS_H
#define SM_A2A_BACKENDS_H

#include "moe/a2a.h"

extern const sm_a2a_backend sm_a2a_local;

#endif
