/* Fuzz target: a Hugging Face config.json, parsed into a model configuration. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

int fuzz_one(const uint8_t *data, size_t size);

int fuzz_one(const uint8_t *data, size_t size) {
    sm_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    sm_error err;
    if (sm_config_parse((const char *)data, size, "fuzz/config.json", &cfg, &err) != SM_OK) {
        if (!memchr(err.msg, '\0', sizeof err.msg) || strncmp(err.msg, "fuzz/config.json", 16)) abort();
        return 0;
    }
    sm_config_free(&cfg);
    return 0;
}
