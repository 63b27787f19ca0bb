# Tokenizer: ids and text against the `tokenizers` library (tests/fixtures/tokenizers), broken
# files, and the tokenize/detokenize commands.
specmoe_test(test_tokenizer SOURCES unit/test_tokenizer.c)
specmoe_script_test(test_tokenize_cli tests/scripts/test_tokenize_cli.sh)
