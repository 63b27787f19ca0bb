#!/usr/bin/env bash
# specmoe tokenize / detokenize: ids as the `tokenizers` library gives them (fixture cases),
# round trip, --model DIR, and exit codes for user and usage errors.
set -u
bin="$1"
fx="${SPECMOE_SOURCE_DIR:-.}/tests/fixtures/tokenizers"
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { # name, got, want
    if [ "$2" != "$3" ]; then echo "FAIL $1: got '$2', want '$3'"; fail=1; else echo "ok   $1"; fi
}

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
"$bin" tokenize --tokenizer no/such.json --text x 2> "$tmp/err.txt"; rc=$?
check "missing tokenizer exits 1" "$rc" "1"
check "message names the file" "$(grep -c 'no/such.json' "$tmp/err.txt")" "1"
"$bin" tokenize --text x 2> "$tmp/err.txt"; rc=$?
check "no --model/--tokenizer exits 2" "$rc" "2"
"$bin" detokenize --tokenizer "$fx/gpt2/tokenizer.json" --ids 1,x 2> "$tmp/err.txt"; rc=$?
check "bad --ids exits 2" "$rc" "2"
"$bin" detokenize --tokenizer "$fx/gpt2/tokenizer.json" --ids 99999 2> "$tmp/err.txt"; rc=$?
check "out-of-vocabulary id exits 1" "$rc" "1"
"$bin" tokenize --help > /dev/null; rc=$?
check "--help exits 0" "$rc" "0"
exit $fail
