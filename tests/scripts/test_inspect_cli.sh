#!/usr/bin/env bash
# specmoe inspect: the description of a checkpoint, and the messages for broken ones (they must
# name the file and the tensor or key, and exit 1).
set -u
bin="$1"
src="${SPECMOE_SOURCE_DIR:-.}"
ck="$src/tests/fixtures/loader/ckpt"
source "$src/tests/scripts/lib.sh"

expect "target description" 0 "experts         16, top-k 2, moe ffn 256" "$bin" inspect "$src/experiments/models/target"
expect "parameter counts" 0 "total 15,354,368 (15.35 M), active 4,344,320" "$bin" inspect "$src/experiments/models/target"
expect "shared expert" 0 "shared expert" "$bin" inspect "$ck/qwen2_moe_hub"
expect "sharded" 0 "in 2 files" "$bin" inspect "$ck/qwen3_moe_sharded"
"$bin" inspect "$src/experiments/models/draft" --json > "$tmp/d.json" || { echo "FAIL --json exit"; fail=1; }
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['num_experts']==8 and d['num_layers']==2, d" "$tmp/d.json" \
    && echo "ok   --json parses" || { echo "FAIL --json"; fail=1; }

expect "wrong shape names tensor" 1 "'model.layers.1.self_attn.k_proj.weight' has shape [8, 8], expected [4, 8]" \
    "$bin" inspect "$ck/bad_shape"
expect "unknown architecture" 1 "architecture 'FooForCausalLM' is not supported" "$bin" inspect "$ck/bad_unknown_arch"
expect "missing dir" 1 "/nonexistent/config.json: cannot open" "$bin" inspect /nonexistent
expect "usage" 2 "need a checkpoint directory" "$bin" inspect

# A corrupt copy of a real checkpoint: truncated weights, then a header that lies.
mkdir -p "$tmp/trunc" "$tmp/garbage"
cp "$src/experiments/models/draft/config.json" "$tmp/trunc/"
head -c 100000 "$src/experiments/models/draft/model.safetensors" > "$tmp/trunc/model.safetensors"
expect "truncated safetensors" 1 "$tmp/trunc/model.safetensors" "$bin" inspect "$tmp/trunc"
cp "$src/experiments/models/draft/config.json" "$tmp/garbage/"
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":not json}' > "$tmp/garbage/model.safetensors"
expect "garbage header" 1 "$tmp/garbage/model.safetensors" "$bin" inspect "$tmp/garbage"
exit $fail
