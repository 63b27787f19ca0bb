# Speculative decoding: drafters, verification, engine, CLI.
specmoe_test(test_spec SOURCES unit/test_spec.c)
specmoe_test(test_spec_verify SOURCES unit/test_spec_verify.c)
specmoe_test(test_spec_engine SOURCES unit/test_spec_engine.c)
specmoe_script_test(test_generate_spec_cli tests/scripts/test_generate_spec_cli.sh)
