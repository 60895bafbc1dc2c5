// main.c - the `ctrace` program.
#include "host.h"

int main(int argc, char **argv) { return ct_host_main(argc, argv); }
