/* placeholder until the real command lands in this session */
#include "cli.h"
int cmd_config(int argc, char **argv) { (void)argc; (void)argv; return kd_cli_usage_error("config", "not built yet"); }
