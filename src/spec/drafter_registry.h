/* src/spec/drafter_registry.h — internal: the drafter backends (one file each). */
#ifndef SM_DRAFTER_REGISTRY_H
#define SM_DRAFTER_REGISTRY_H

#include "spec/spec.h"

extern const sm_drafter_backend sm_drafter_model;
extern const sm_drafter_backend sm_drafter_ngram;
extern const sm_drafter_backend sm_drafter_self;

#endif
