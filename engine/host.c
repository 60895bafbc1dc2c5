// host.c - the Lua host behind the `ctrace` program: state setup, package paths, protected
// calls with tracebacks (Ctrl-C and timeouts: bind/bind_state.c), scripts, -e and the REPL.
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bind/bind.h"
#include "core/dist.h"
#include "host.h"

static int traceback(lua_State *L) {
    lua_sethook(L, NULL, 0, 0);   // an interrupt or timeout hook must not fire inside the handler
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "ctrace.traceback");   // debug.traceback, kept from sandboxes
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

// Calls the function below n_args arguments; prints errors; returns 0 on success, 1 on an error
// (the program's exit status for a failed script, as the README states).
static int docall(lua_State *L, int n_args, int n_results) {
    int base = lua_gettop(L) - n_args;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    ct_lua_protect_begin(L);   // Ctrl-C interrupts this call (bind_state.c)
    int st = lua_pcall(L, n_args, n_results, base);
    ct_lua_protect_end(L);
    lua_remove(L, base);
    if (st) {
        if (ct_dist_size() > 1) fprintf(stderr, "ctrace [rank %d]: ", ct_dist_rank());   // which rank of an MPI job
        else fprintf(stderr, "ctrace: ");
        fprintf(stderr, "%s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error)");
        fflush(stderr);
        lua_pop(L, 1);
        lua_gc(L, LUA_GCCOLLECT, 0);
    }
    return st ? 1 : 0;
}

// ----------------------------------------------------------------------------
// State

// Directory of the project (holding lua/ctrace): $CTRACE_ROOT, else the nearest directory above
// the executable that has lua/ctrace/init.lua (build/ctrace, build/asan/ctrace -> the project).
static void find_root(char *out, size_t n) {
    const char *env = getenv("CTRACE_ROOT");
    if (env) {
        snprintf(out, n, "%s", env);
        return;
    }
    char dir[1024];
    ssize_t k = readlink("/proc/self/exe", dir, sizeof dir - 1);
    snprintf(out, n, ".");
    if (k <= 0) return;
    dir[k] = 0;
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash) return;
        *slash = 0;
        char probe[1200];
        snprintf(probe, sizeof probe, "%s/lua/ctrace/init.lua", dir);
        if (access(probe, R_OK) == 0) {
            snprintf(out, n, "%s", dir);
            return;
        }
    }
}

lua_State *ct_host_new(void) {
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, LUA_REGISTRYINDEX, "ctrace.traceback");
    lua_pop(L, 1);
    char root[1024];
    find_root(root, sizeof root);
    // package.path: the project's lua/ first
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", root, root, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_ctrace_core);
    lua_setfield(L, -2, "ctrace.core");
    lua_pop(L, 2);
    // ctrace.core.root
    lua_getglobal(L, "require");
    lua_pushstring(L, "ctrace.core");
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_pushstring(L, root);
        lua_setfield(L, -2, "root");
    }
    lua_pop(L, 1);
    return L;
}

// ----------------------------------------------------------------------------
// Entry points

static int run_string(lua_State *L, const char *code, const char *name) {
    if (luaL_loadbuffer(L, code, strlen(code), name)) {
        fprintf(stderr, "ctrace: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 1;
    }
    return docall(L, 0, 0);
}

static int run_script(lua_State *L, const char *path, int argc, char **argv, int first_arg) {
    // global arg table as the standalone interpreter makes it
    lua_createtable(L, argc - first_arg, 1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (int i = first_arg + 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - first_arg);
    }
    lua_setglobal(L, "arg");
    int st = strcmp(path, "-") == 0 ? luaL_loadfile(L, NULL) : luaL_loadfile(L, path);
    if (st) {
        fprintf(stderr, "ctrace: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 1;
    }
    int n = 0;
    for (int i = first_arg + 1; i < argc; i++, n++) lua_pushstring(L, argv[i]);
    return docall(L, n, 0);
}

// Reads one line into buf; 0 at end of input.
static int read_line(char *buf, size_t n, const char *prompt, int tty) {
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    return fgets(buf, (int)n, stdin) != NULL;
}

static int incomplete(lua_State *L, int st) {
    if (st != LUA_ERRSYNTAX) return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 7 && strcmp(msg + len - 7, "'<eof>'") == 0;
}

// Read-eval-print loop; state (globals) persists between lines. An expression line prints
// its values.
static int repl(lua_State *L) {
    int tty = isatty(0), errors = 0;
    if (tty) printf("ctrace %s (LuaJIT). require \"ctrace\" is loaded as ct.\n", CT_VERSION);
    run_string(L, "ct = require 'ctrace'", "=repl");
    char line[8192];
    while (read_line(line, sizeof line, "> ", tty)) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, line);
        luaL_pushresult(&b);   // [chunk]
        for (;;) {
            const char *chunk = lua_tostring(L, -1);
            lua_pushfstring(L, "return %s", chunk);
            int st = luaL_loadbuffer(L, lua_tostring(L, -1), strlen(lua_tostring(L, -1)), "=stdin");
            lua_remove(L, -2);
            if (st) {
                lua_pop(L, 1);
                st = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
            }
            if (incomplete(L, st)) {
                lua_pop(L, 1);
                if (!read_line(line, sizeof line, ">> ", tty)) break;
                lua_pushstring(L, line);
                lua_concat(L, 2);
                continue;
            }
            if (st) {
                fprintf(stderr, "ctrace: %s\n", lua_tostring(L, -1));
                lua_pop(L, 1);
                errors++;
                break;
            }
            int top = lua_gettop(L) - 1;   // [chunk, fn]: results replace fn
            if (docall(L, 0, LUA_MULTRET)) {
                errors++;
            } else if (lua_gettop(L) > top) {
                int n = lua_gettop(L) - top;
                lua_getglobal(L, "print");
                lua_insert(L, top + 1);
                docall(L, n, 0);
            }
            break;
        }
        lua_settop(L, 0);
    }
    if (tty) printf("\n");
    return errors ? 1 : 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ctrace [options] [script.lua [args...]]\n"
            "       ctrace run | check | new <folder>   (case-study folders; --help on each)\n"
            "       ctrace attribute -p TEXT [-t SET] ...  (a graph without a script; circuit-tracer's flags)\n"
            "       ctrace serve <dir> | start-server --graph_file_dir <dir>  (graphs and viewer pages on localhost)\n"
            "       ctrace convert <in> <out>   (a graph between circuit-tracer's .pt, .safetensors and graph JSON)\n"
            "       ctrace upload <graph>       (to Neuronpedia, with NEURONPEDIA_API_KEY)\n"
            "  script.lua args   run a Lua script (\"-\" reads it from standard input)\n"
            "  -e code           run a Lua chunk (may repeat; runs before the script)\n"
            "  (no script, no -e) start the REPL; state persists between lines\n"
            "  -v, --version     print the version\n"
            "  -h, --help        this text\n"
            "Scripts find ctrace with require \"ctrace\".\n");
}

// ctrace run | check | new | attribute | serve | start-server | convert | upload: the subcommands live in lua/ctrace/cli.lua.
static int subcommand(const char *cmd, int argc, char **argv) {
    lua_State *L = ct_host_new();
    if (!L) {
        fprintf(stderr, "ctrace: cannot create a Lua state (out of memory)\n");
        return 1;
    }
    // modules from the project only: never ./?.lua or a C module of the directory run from (a
    // case-study folder may ship one)
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1), *semi = path;
    for (int k = 0; k < 2 && semi; k++) semi = strchr(semi + (k > 0), ';');
    if (semi) lua_pushlstring(L, path, (size_t)(semi - path)), lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    int status = 1;
    lua_getglobal(L, "require");
    lua_pushstring(L, "ctrace.cli");
    if (docall(L, 1, 1) == 0) {
        lua_getfield(L, -1, "main");
        lua_pushstring(L, cmd);
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i + 1);
        }
        if (docall(L, 2, 1) == 0) status = (int)lua_tointeger(L, -1);
    }
    lua_close(L);
    return status;
}

int ct_host_main(int argc, char **argv) {
    int i = 1, ran = 0, st = 0;
    static const char *const cmds[] = {"run", "check", "new", "attribute", "serve", "start-server", "convert", "upload", NULL};
    if (argc == 2 && strcmp(argv[1], "--run-child") == 0) return ct_host_run_child();
    for (int c = 0; argc >= 2 && cmds[c]; c++) {
        if (strcmp(argv[1], cmds[c]) != 0) continue;
        // of the commands, attribute and run share their work among the ranks of an MPI job; the
        // others would each do the whole of it
        if (ct_dist_size() > 1 && strcmp(argv[1], "attribute") != 0 && strcmp(argv[1], "run") != 0) {
            fprintf(stderr, "ctrace [rank %d] %s: runs as one process, not as %d ranks of an MPI job: run it without "
                    "mpirun (of the commands, attribute and run run under MPI; scripts do too)\n", ct_dist_rank(),
                    argv[1], ct_dist_size());
            return 2;
        }
        return subcommand(argv[1], argc - 2, argv + 2);
    }
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("ctrace %s\n", CT_VERSION);
            return 0;
        }
    }
    lua_State *L = ct_host_new();
    if (!L) {
        fprintf(stderr, "ctrace: cannot create a Lua state (out of memory)\n");
        return 1;
    }
    for (i = 1; i < argc && st == 0; i++) {
        if (strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ctrace: -e needs an argument\n");
                st = 2;
                break;
            }
            st = run_string(L, argv[++i], "=(command line)");
            ran = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != 0) {
            fprintf(stderr, "ctrace: unknown option '%s'\n", argv[i]);
            usage(stderr);
            st = 2;
        } else {
            st = run_script(L, argv[i], argc, argv, i);
            ran = 1;
            break;
        }
    }
    if (!ran && st == 0 && ct_dist_size() > 1) {   // mpirun gives stdin to rank 0 alone: the others would end at once
        fprintf(stderr, "ctrace [rank %d]: no REPL under MPI: give a script or -e\n", ct_dist_rank());
        st = 2;
    }
    if (!ran && st == 0) st = repl(L);
    lua_close(L);
    return st;
}
