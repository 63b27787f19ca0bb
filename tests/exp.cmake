# Experiments: results database, Lua API, specmoe run / report (issue 5).
specmoe_test(test_exp_db SOURCES unit/test_exp_db.c)
specmoe_script_test(exp_cli tests/exp/test_cli.sh)
specmoe_script_test(exp_html_chromium tests/exp/test_html.sh LABELS chromium)
specmoe_test(test_exp_routes SOURCES unit/test_exp_routes.c)
# sm.model's dtype reaches the MoE runner (sm_model_opts.dtype).
specmoe_test(test_model_dtype SOURCES unit/test_model_dtype.c)
specmoe_script_test(exp_interrupt tests/exp/test_interrupt.sh)
