/* specmoe tokenize / specmoe detokenize — text <-> token ids with a model's tokenizer.json, for
 * checking prompts and comparing with the `tokenizers` library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/tokenizer.h"

/* --model DIR means DIR/tokenizer.json; --tokenizer names the file itself. Exactly one. */
static int open_tokenizer(const char *cmd, const char *model_dir, const char *tok_file, sm_tokenizer **tok) {
    if (!!model_dir == !!tok_file) {
        fprintf(stderr, "specmoe %s: give exactly one of --model DIR or --tokenizer FILE\n", cmd);
        return 2;
    }
    char path[4096];
    if (model_dir) {
        int n = snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "specmoe %s: --model path is too long\n", cmd);
            return 1;
        }
        tok_file = path;
    }
    sm_error err = {0};
    if (sm_tokenizer_load(tok_file, tok, &err) != SM_OK) {
        fprintf(stderr, "specmoe %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

/* The whole of a file ("-" = stdin), malloc'd. */
static int read_all(const char *path, char **data, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        perror(path);
        return 1;
    }
    size_t cap = 65536, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) { free(buf); buf = NULL; break; }
            buf = bigger;
            cap *= 2;
        }
    }
    bool failed = !buf || ferror(f);
    if (f != stdin) fclose(f);
    if (failed) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        return 1;
    }
    *data = buf;
    *len = n;
    return 0;
}

int sm_cmd_tokenize(int argc, char **argv) {
    const char *model_dir = NULL, *tok_file = NULL, *text = NULL, *file = NULL;
    bool add_special = false;
    sm_arg args[] = {
        {"model", SM_ARG_STRING, &model_dir, "checkpoint directory with tokenizer.json"},
        {"tokenizer", SM_ARG_STRING, &tok_file, "tokenizer.json file (instead of --model)"},
        {"text", SM_ARG_STRING, &text, "text to encode"},
        {"file", SM_ARG_STRING, &file, "encode the contents of a file ('-' = stdin; the default)"},
        {"add-special", SM_ARG_FLAG, &add_special, "add the post-processor's special tokens (e.g. <s>), as a chat or generate prompt gets them"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("tokenize", "(--model DIR | --tokenizer FILE) [--text T | --file F] [--add-special]", args,
                           (int)(sizeof args / sizeof args[0]), argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (text && file) {
        fprintf(stderr, "specmoe tokenize: give --text or --file, not both\n");
        return 2;
    }
    sm_tokenizer *tok = NULL;
    if ((rc = open_tokenizer("tokenize", model_dir, tok_file, &tok))) return rc;
    char *owned = NULL;
    size_t len = text ? strlen(text) : 0;
    if (!text) {
        if (read_all(file ? file : "-", &owned, &len)) { sm_tokenizer_free(tok); return 1; }
        text = owned;
    }
    int *ids = NULL, n_ids = 0;
    sm_error err = {0};
    if (sm_tokenizer_encode(tok, text, len, add_special, &ids, &n_ids, &err) != SM_OK) {
        fprintf(stderr, "specmoe tokenize: %s\n", err.msg);
        rc = 1;
    } else {
        putchar('[');
        for (int i = 0; i < n_ids; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
    }
    free(ids);
    free(owned);
    sm_tokenizer_free(tok);
    return rc;
}

int sm_cmd_detokenize(int argc, char **argv) {
    const char *model_dir = NULL, *tok_file = NULL, *ids_text = NULL;
    bool skip_special = false;
    sm_arg args[] = {
        {"model", SM_ARG_STRING, &model_dir, "checkpoint directory with tokenizer.json"},
        {"tokenizer", SM_ARG_STRING, &tok_file, "tokenizer.json file (instead of --model)"},
        {"ids", SM_ARG_STRING, &ids_text, "comma-separated token ids"},
        {"skip-special", SM_ARG_FLAG, &skip_special, "leave special tokens out of the text"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("detokenize", "(--model DIR | --tokenizer FILE) --ids 1,2,3 [--skip-special]", args,
                           (int)(sizeof args / sizeof args[0]), argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (!ids_text) {
        fprintf(stderr, "specmoe detokenize: --ids is required\n");
        return 2;
    }
    int *ids = NULL, n_ids = 0;
    if (sm_args_parse_ids("--ids", ids_text, &ids, &n_ids)) return 2;
    sm_tokenizer *tok = NULL;
    if ((rc = open_tokenizer("detokenize", model_dir, tok_file, &tok))) { free(ids); return rc; }
    char *text = NULL;
    size_t len = 0;
    sm_error err = {0};
    if (sm_tokenizer_decode(tok, ids, n_ids, skip_special, &text, &len, &err) != SM_OK) {
        fprintf(stderr, "specmoe detokenize: %s\n", err.msg);
        rc = 1;
    } else {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    free(ids);
    sm_tokenizer_free(tok);
    return rc;
}
