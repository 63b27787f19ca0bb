#!/usr/bin/env bash
# specmoe generate with speculative decoding: greedy output equal to the plain run for every
# drafter, the acceptance summary (stderr and --json), and exit codes for user errors (1) and
# usage errors (2) with messages that name the problem.
set -u
bin="$1"
ck="${SPECMOE_SOURCE_DIR:-.}/tests/fixtures/loader/ckpt"
sp="${SPECMOE_SOURCE_DIR:-.}/tests/fixtures/spec"
source "${SPECMOE_SOURCE_DIR:-.}/tests/scripts/lib.sh"
gen=("$bin" generate --model "$ck/qwen3_moe_hub" --prompt-ids 1,2,3,1,2 --max-new-tokens 24 --ignore-eos --threads 1)
plain=$("${gen[@]}" 2>/dev/null)
check "plain greedy run prints ids" "$([ -n "$plain" ] && echo yes)" "yes"
for args in "--drafter ngram --k 3" "--drafter self --self-top-k 1 --k 5" "--drafter self --self-layers 0 --k 2" \
            "--draft $ck/mixtral_hub --k 4" "--draft $ck/qwen3_moe_hub --num-speculative-tokens 8 --speculative-moe-runner-backend ref"; do
    # shellcheck disable=SC2086
    got=$("${gen[@]}" $args 2>"$tmp/err")
    check "greedy with $args equals plain" "$got" "$plain"
    grep -q "acceptance_rate" "$tmp/err" || { echo "FAIL $args: no acceptance summary"; fail=1; }
    grep -q "per-position acceptance:" "$tmp/err" || { echo "FAIL $args: no per-position acceptance"; fail=1; }
done

# draft == target: everything accepted; --json carries the same numbers
json=$("${gen[@]}" --draft "$ck/qwen3_moe_hub" --k 4 --json)
rate=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["acceptance_rate"], d["num_output_tokens"], len(d["accepted_per_pos"]), d["finish_reason"])' "$json")
check "--json, draft == target" "$rate" "1.0 24 4 length"

expect_error "k = 0" 1 "between 1 and 64, got 0" "${gen[@]}" --drafter ngram --k 0
expect_error "k = 65" 1 "between 1 and 64, got 65" "${gen[@]}" --drafter ngram --k 65
expect_error "k without drafter" 1 "no drafter is chosen" "${gen[@]}" --k 3
expect_error "unknown drafter" 1 "unknown drafter 'eagle' (available: model, ngram, self" "${gen[@]}" --drafter eagle
expect_error "draft with another vocabulary" 1 \
    "draft model $sp/llama_vocab24 has a vocabulary of 24 tokens but target $ck/qwen3_moe_hub has 16" \
    "${gen[@]}" --draft "$sp/llama_vocab24"
expect_error "missing draft dir" 1 "loading draft model $tmp/none" "${gen[@]}" --draft "$tmp/none"
expect_error "--drafter model without --draft" 2 "--drafter model needs --draft DIR" "${gen[@]}" --drafter model
expect_error "--draft with --drafter ngram" 2 "--draft DIR goes with --drafter model" "${gen[@]}" --drafter ngram --draft "$ck/llama"
expect_error "self options without self" 2 "need --drafter self" "${gen[@]}" --drafter ngram --self-top-k 1
expect_error "self layers and skip layers" 2 "not both" "${gen[@]}" --drafter self --self-layers 0 --self-skip-layers 1
expect_error "bad self layer list" 2 "--self-layers" "${gen[@]}" --drafter self --self-layers 0,x
expect_error "self layer out of range" 1 "is layer 9" "${gen[@]}" --drafter self --self-layers 9
expect_error "self top-k on a dense target" 1 "not a MoE model" "$bin" generate --model "$ck/llama" --prompt-ids 1,2 --max-new-tokens 4 --drafter self --self-top-k 1
expect_error "k not a number" 2 "--k expects an integer" "${gen[@]}" --drafter ngram --k many
long=$(python3 -c 'print(",".join(["3"] * 70))')
expect_error "prompt longer than the context" 1 "exceeds the context of 64 tokens" \
    "$bin" generate --model "$ck/qwen3_moe_hub" --prompt-ids "$long" --drafter ngram --k 2

exit $fail
