# config.json parsing and safetensors/checkpoint loading (fixtures: tests/fixtures/loader,
# made by tests/fixtures/gen/make_loader_fixtures.py).
specmoe_test(test_config SOURCES unit/test_config.c)
specmoe_test(test_safetensors SOURCES unit/test_safetensors.c)
specmoe_script_test(test_inspect_cli tests/scripts/test_inspect_cli.sh)
