// host.h - the Lua host: a configured lua_State and the `ctrace` command line.
#ifndef CT_HOST_H
#define CT_HOST_H


struct lua_State;
// A new state with the standard libraries, package.path covering the project's lua/, and
// ctrace.core preloaded. NULL when out of memory.
struct lua_State *ct_host_new(void);
// The `ctrace` program: scripts, -e, REPL. Returns the exit status.
int ct_host_main(int argc, char **argv);
// The experiment process of `ctrace run` (host_run.c): `ctrace --run-child`, started by the
// parent with its socket at descriptor 3. Returns the exit status.
int ct_host_run_child(void);

#endif
