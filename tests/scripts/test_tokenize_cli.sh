#!/usr/bin/env bash
# specmoe tokenize / detokenize: ids as the `tokenizers` library gives them (fixture cases),
# round trip, --model DIR, and exit codes for user and usage errors.
set -u
bin="$1"
fx="${SPECMOE_SOURCE_DIR:-.}/tests/fixtures/tokenizers"
source "${SPECMOE_SOURCE_DIR:-.}/tests/scripts/lib.sh"

# ids for a fixture case ("Hello world") computed by tokenizers
want=$(python3 - "$fx/llama2/cases.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    c = json.loads(line)
    if c.get("text") == "Hello world":
        print(json.dumps(c["ids"]))
        break
PY
)
got=$("$bin" tokenize --tokenizer "$fx/llama2/tokenizer.json" --text "Hello world" --add-special)
check "tokenize llama2 'Hello world'" "$got" "$want"

ids=$("$bin" tokenize --model "$fx/gpt2" --text "Hello world 😀 ok" | tr -d '[] ')
check "tokenize --model DIR gives ids" "$([ -n "$ids" ] && echo yes)" "yes"
text=$("$bin" detokenize --model "$fx/gpt2" --ids "$ids")
check "detokenize round trip" "$text" "Hello world 😀 ok"

printf 'from a file\n' > "$tmp/input.txt"
a=$("$bin" tokenize --tokenizer "$fx/qwen2/tokenizer.json" --file "$tmp/input.txt")
b=$(printf 'from a file\n' | "$bin" tokenize --tokenizer "$fx/qwen2/tokenizer.json")
check "--file equals stdin" "$a" "$b"

with=$("$bin" tokenize --tokenizer "$fx/llama3/tokenizer.json" --text "hi" --add-special | tr -d '[] ')
without=$("$bin" tokenize --tokenizer "$fx/llama3/tokenizer.json" --text "hi" | tr -d '[] ')
check "--add-special adds <|begin_of_text|>, the default does not" "$with" "0,$without"
bos_text=$("$bin" detokenize --tokenizer "$fx/llama3/tokenizer.json" --ids "$with")
skip_text=$("$bin" detokenize --tokenizer "$fx/llama3/tokenizer.json" --ids "$with" --skip-special)
check "detokenize keeps specials" "$bos_text" "<|begin_of_text|>hi"
check "detokenize --skip-special" "$skip_text" "hi"

# errors: 1 with a message naming the file, 2 for usage
expect_error "missing tokenizer" 1 "no/such.json: cannot open" "$bin" tokenize --tokenizer no/such.json --text x
expect_error "no --model/--tokenizer" 2 "give exactly one of --model DIR or --tokenizer FILE" "$bin" tokenize --text x
expect_error "bad --ids" 2 "got '1,x'" "$bin" detokenize --tokenizer "$fx/gpt2/tokenizer.json" --ids 1,x
expect_error "out-of-vocabulary id" 1 "token id 99999 at position 0 is outside the vocabulary (size 703)" \
    "$bin" detokenize --tokenizer "$fx/gpt2/tokenizer.json" --ids 99999
expect "--help" 0 "usage: specmoe tokenize" "$bin" tokenize --help
exit $fail
