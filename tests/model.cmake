# CPU reference forward against transformers fixtures (tests/fixtures/models).
specmoe_test(test_forward SOURCES unit/test_forward.c)
