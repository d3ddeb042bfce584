/* tools/demo.c — placeholder replaced below */
#include <stdio.h>
#include "tools/cli.h"
int cmd_demo(int argc, char **argv)
{
    fprintf(stderr, "tillsync: demo is not built yet\n");
    return 1;
}
