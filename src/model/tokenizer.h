/* src/model/tokenizer.h — tokenizer.json (Hugging Face `tokenizers`) for BPE models:
 * byte-level BPE with a split regex (GPT-2 / Qwen / Llama-3 / OLMoE) and SentencePiece-style
 * BPE with "▁" and byte fallback (Llama-2 / Mixtral). Ids match the `tokenizers` library. */
#ifndef SM_TOKENIZER_H
#define SM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct sm_tokenizer sm_tokenizer;

sm_status sm_tokenizer_load(const char *path, sm_tokenizer **out, sm_error *err);
/* DIR/tokenizer.json when the checkpoint has one; *out stays NULL (and SM_OK) when it has none. */
sm_status sm_tokenizer_load_dir(const char *dir, sm_tokenizer **out, sm_error *err);
/* Parse from memory; path is used in messages only. */
sm_status sm_tokenizer_parse(const char *json, size_t len, const char *path, sm_tokenizer **out, sm_error *err);
void sm_tokenizer_free(sm_tokenizer *tok);

/* Encode text; add_special applies the post-processor (e.g. <s> prefix). *ids is malloc'd. */
sm_status sm_tokenizer_encode(const sm_tokenizer *tok, const char *text, size_t len, bool add_special,
                              int **ids, int *n_ids, sm_error *err);
/* Decode ids to UTF-8 (invalid bytes become U+FFFD, as `tokenizers` does). *text is malloc'd
 * and NUL-terminated. */
sm_status sm_tokenizer_decode(const sm_tokenizer *tok, const int *ids, int n_ids, bool skip_special,
                              char **text, size_t *len, sm_error *err);

int sm_tokenizer_vocab_size(const sm_tokenizer *tok);   /* highest id + 1, added tokens included */
int sm_tokenizer_token_to_id(const sm_tokenizer *tok, const char *token); /* -1 when absent */
const char *sm_tokenizer_id_to_token(const sm_tokenizer *tok, int id);    /* NULL when absent */
bool sm_tokenizer_is_special(const sm_tokenizer *tok, int id);
/* A hash of the whole vocabulary and merges: equal fingerprints mean the same token ids. */
uint64_t sm_tokenizer_fingerprint(const sm_tokenizer *tok);

#endif
