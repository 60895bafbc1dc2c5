// pt.c - PyTorch .pt files: a pickle machine that calls nothing, over a zip archive.
#include "formats/pt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

const char *ct_pk_kind_name(ct_pk_kind k) {
    static const char *const names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict",
                                        "class", "object", "storage", "tensor", "mark"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

static const struct {
    const char *name;
    ct_dtype dtype;
} storages[] = {{"FloatStorage", CT_DT_F32}, {"DoubleStorage", CT_DT_F64}, {"HalfStorage", CT_DT_F16},
                {"BFloat16Storage", CT_DT_BF16}, {"LongStorage", CT_DT_I64}, {"IntStorage", CT_DT_I32},
                {"ShortStorage", CT_DT_I16}, {"CharStorage", CT_DT_I8}, {"ByteStorage", CT_DT_U8},
                {"BoolStorage", CT_DT_BOOL}};

const char *ct_pt_storage_name(ct_dtype dtype) {
    for (size_t i = 0; i < sizeof storages / sizeof *storages; i++)
        if (storages[i].dtype == dtype) return storages[i].name;
    return NULL;
}

// ----------------------------------------------------------------------------
// Reading

// Values a pickle may make (each about 200 bytes): a saved graph's pickle makes a few per logit
// target and a few dozen besides (its tensors' bytes are storages, not pickle values).
#define PT_MAX_NODES ((size_t)1 << 20)
// The largest data.pkl read (a graph's is a few KB plus about 100 bytes a logit target).
#define PT_MAX_PICKLE ((size_t)64 << 20)

typedef struct {
    ct_pt *pt;
    const uint8_t *b;      // the pickle
    size_t n, at;          // its size, the next byte
    const char *prefix;    // "<archive>/" (storages are <prefix>data/<key>)
    size_t prefix_len;
    ct_pk **stack;
    size_t sp, stack_cap;
    ct_pk **memo;
    size_t memo_n, memo_cap;   // slots (indices 0 .. memo_n - 1 exist, some NULL)
    size_t memo_count;         // slots filled (pickle's len(memo): MEMOIZE's index)
    size_t ops;                // opcodes read: bounds memo indices
    int too_many;              // PT_MAX_NODES reached
    ct_err *err;
} vm;

static ct_status bad(vm *m, const char *what) {
    return ct_fail(m->err, CT_STATUS_BAD_FORMAT, "pt: data.pkl: %s at byte %zu", what, m->at);
}

static ct_status no_room(vm *m) {
    if (m->too_many)
        return ct_fail(m->err, CT_STATUS_BAD_FORMAT, "pt: data.pkl makes more than %zu values (a saved graph makes a few "
                       "per logit target)", PT_MAX_NODES);
    return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
}

static ct_pk *node(vm *m, ct_pk_kind kind) {
    ct_pt *p = m->pt;
    if (p->n_nodes >= PT_MAX_NODES) {
        m->too_many = 1;
        return NULL;
    }
    if (p->n_nodes == p->cap_nodes) {
        size_t nc = p->cap_nodes ? 2 * p->cap_nodes : 256;
        ct_pk **nn = realloc(p->nodes, sizeof *nn * nc);
        if (!nn) return NULL;
        p->nodes = nn, p->cap_nodes = nc;
    }
    ct_pk *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->kind = kind;
    p->nodes[p->n_nodes++] = k;
    return k;
}

static int push(vm *m, ct_pk *k) {
    if (!k) return 0;
    if (m->sp == m->stack_cap) {
        size_t nc = m->stack_cap ? 2 * m->stack_cap : 64;
        ct_pk **ns = realloc(m->stack, sizeof *ns * nc);
        if (!ns) return 0;
        m->stack = ns, m->stack_cap = nc;
    }
    m->stack[m->sp++] = k;
    return 1;
}

static ct_pk *pop(vm *m) { return m->sp ? m->stack[--m->sp] : NULL; }

// The top value (NULL on an empty stack or a MARK, as Python's pickle refuses them).
static ct_pk *top(vm *m) { return m->sp && m->stack[m->sp - 1]->kind != CT_PK_MARK ? m->stack[m->sp - 1] : NULL; }

static ct_pk *pop_value(vm *m) {
    ct_pk *k = top(m);
    if (k) m->sp--;
    return k;
}

// Whether the n values below the top are values (no MARK among them).
static int values(const vm *m, size_t n) {
    if (m->sp < n) return 0;
    for (size_t i = m->sp - n; i < m->sp; i++)
        if (m->stack[i]->kind == CT_PK_MARK) return 0;
    return 1;
}

// The stack index just above the topmost MARK, or (size_t)-1 without one.
static size_t mark_at(const vm *m) {
    for (size_t i = m->sp; i-- > 0;)
        if (m->stack[i]->kind == CT_PK_MARK) return i + 1;
    return (size_t)-1;
}

static int add_item(ct_pk *c, ct_pk *v) {
    if (c->n == c->cap) {
        int64_t nc = c->cap ? 2 * c->cap : 4;
        ct_pk **ni = realloc(c->items, sizeof *ni * (size_t)nc);
        if (!ni) return 0;
        c->items = ni, c->cap = nc;
    }
    c->items[c->n++] = v;
    return 1;
}

// A tuple (or list) of the stack items above index from, which are popped (the MARK too when
// from is above one).
static ct_pk *collect(vm *m, ct_pk_kind kind, size_t from) {
    ct_pk *t = node(m, kind);
    if (!t) return NULL;
    for (size_t i = from; i < m->sp; i++)
        if (!add_item(t, m->stack[i])) return NULL;
    m->sp = from;
    return t;
}

static int is_global(const ct_pk *k, const char *name) { return k && k->kind == CT_PK_GLOBAL && strcmp(k->s, name) == 0; }

static int is_int(const ct_pk *k) { return k && (k->kind == CT_PK_INT || k->kind == CT_PK_BOOL); }

// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]): a tensor
// in C order inside its storage.
static ct_status rebuild_tensor(vm *m, const ct_pk *args, ct_pk **out) {
    if (!args || args->kind != CT_PK_TUPLE || args->n < 4)
        return bad(m, "_rebuild_tensor_v2 called without (storage, offset, size, stride, ...)");
    const ct_pk *st = args->items[0], *off = args->items[1], *size = args->items[2], *stride = args->items[3];
    if (st->kind != CT_PK_STORAGE || !is_int(off) || size->kind != CT_PK_TUPLE || stride->kind != CT_PK_TUPLE ||
        size->n != stride->n)
        return bad(m, "_rebuild_tensor_v2 arguments are not (storage, int, size tuple, stride tuple of the same length)");
    if (size->n > CT_PK_MAX_DIMS) return bad(m, "a tensor of more than 8 dimensions");
    ct_pk *t = node(m, CT_PK_TENSOR);
    if (!t) return no_room(m);
    t->dtype = st->dtype, t->ndim = (int)size->n;
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        const ct_pk *s = size->items[d];
        if (!is_int(s) || !is_int(stride->items[d]) || s->i < 0 || s->i > ((int64_t)1 << 40))
            return bad(m, "a tensor size or stride is not an integer of 0..2^40");
        t->shape[d] = s->i;
        if (s->i && numel > ((int64_t)1 << 50) / s->i) return bad(m, "a tensor size overflows");
        numel *= s->i;
    }
    // C order: each stride the product of the sizes after it (any stride for a size of 1; none
    // matters for no element). The products stay below 2^50 when numel does.
    int64_t want = 1;
    for (int d = t->ndim; numel && d-- > 0;) {
        int64_t r = stride->items[d]->i;
        if (t->shape[d] > 1 && r != want)
            return ct_fail(m->err, CT_STATUS_UNSUPPORTED, "pt: a tensor with strides other than C order (dimension %d: "
                           "stride %lld, expected %lld); save it contiguous", d, (long long)r, (long long)want);
        want *= t->shape[d];
    }
    if (off->i < 0 || off->i > st->numel || numel > st->numel - off->i)
        return ct_fail(m->err, CT_STATUS_BAD_SHAPE, "pt: a tensor of %lld elements at offset %lld of a storage of %lld",
                       (long long)numel, (long long)off->i, (long long)st->numel);
    t->numel = numel;
    t->data = st->data + (size_t)off->i * ct_dtype_size(st->dtype);
    *out = t;
    return CT_OK;
}

// BINPERSID: ('storage', torch.<Type>Storage, key, location, numel) -> the data/<key> member.
static ct_status storage(vm *m, const ct_pk *pid, ct_pk **out) {
    if (!pid || pid->kind != CT_PK_TUPLE || pid->n != 5 || pid->items[0]->kind != CT_PK_STR ||
        strcmp(pid->items[0]->s, "storage") != 0 || pid->items[1]->kind != CT_PK_GLOBAL || pid->items[2]->kind != CT_PK_STR ||
        !is_int(pid->items[4]))
        return bad(m, "a persistent id that is not ('storage', type, key, location, numel)");
    const char *type = pid->items[1]->s, *dot = strrchr(type, '.');
    ct_dtype dt = CT_DT_COUNT;
    for (size_t i = 0; i < sizeof storages / sizeof *storages; i++)
        if (strncmp(type, "torch.", 6) == 0 && dot && strcmp(dot + 1, storages[i].name) == 0) dt = storages[i].dtype;
    if (dt == CT_DT_COUNT)
        return ct_fail(m->err, CT_STATUS_BAD_DTYPE, "pt: storage type %.64s; expected torch.FloatStorage, "
                       "BFloat16Storage, HalfStorage, DoubleStorage, LongStorage, IntStorage, ...", type);
    const char *key = pid->items[2]->s;
    size_t kl = strlen(key);
    char *name = malloc(m->prefix_len + 5 + kl + 1);
    if (!name) return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
    memcpy(name, m->prefix, m->prefix_len);
    memcpy(name + m->prefix_len, "data/", 5);
    memcpy(name + m->prefix_len + 5, key, kl + 1);
    const ct_zip_member *mem = ct_zip_find(&m->pt->zip, name);
    free(name);
    if (!mem)
        return ct_fail(m->err, CT_STATUS_BAD_FORMAT, "pt: storage '%.64s' has no member %.*sdata/%.64s", key,
                       (int)m->prefix_len, m->prefix, key);
    int64_t numel = pid->items[4]->i;
    size_t es = ct_dtype_size(dt);
    if (numel < 0 || (uint64_t)numel > mem->size / es || (size_t)numel * es != mem->size)
        return ct_fail(m->err, CT_STATUS_BAD_SHAPE, "pt: storage '%.64s' of %lld %s elements is %zu bytes in the archive",
                       key, (long long)numel, ct_dtype_name(dt), mem->size);
    ct_pk *s = node(m, CT_PK_STORAGE);
    if (!s) return no_room(m);
    s->dtype = dt, s->numel = numel, s->data = mem->data;
    *out = s;
    return CT_OK;
}

// A call: REDUCE (cls, args) or NEWOBJ.
static ct_status call(vm *m, ct_pk *cls, ct_pk *args, ct_pk **out) {
    if (!cls || !args) return bad(m, "a call with an empty stack");
    if (is_global(cls, "torch._utils._rebuild_tensor_v2") || is_global(cls, "torch._utils._rebuild_tensor"))
        return rebuild_tensor(m, args, out);
    if (is_global(cls, "torch._utils._rebuild_parameter") && args->kind == CT_PK_TUPLE && args->n >= 1 &&
        args->items[0]->kind == CT_PK_TENSOR) {
        *out = args->items[0];
        return CT_OK;
    }
    ct_pk *o = node(m, is_global(cls, "collections.OrderedDict") ? CT_PK_DICT : CT_PK_OBJECT);
    if (!o) return no_room(m);
    if (o->kind == CT_PK_OBJECT) o->cls = cls, o->args = args;
    *out = o;
    return CT_OK;
}

// Reads n bytes at the cursor (NULL when fewer are left).
static const uint8_t *take(vm *m, size_t n) {
    if (n > m->n - m->at) return NULL;
    const uint8_t *p = m->b + m->at;
    m->at += n;
    return p;
}

// A line ending in '\n' (GLOBAL's module and name, INT, PUT, GET): at most 4096 bytes.
static const char *line(vm *m, size_t *len) {
    const uint8_t *s = m->b + m->at, *e = memchr(s, '\n', m->n - m->at < 4097 ? m->n - m->at : 4097);
    if (!e) return NULL;
    *len = (size_t)(e - s);
    m->at += *len + 1;
    return (const char *)s;
}

static ct_pk *str_node(vm *m, ct_pk_kind kind, const uint8_t *p, size_t n) {
    ct_pk *k = node(m, kind);
    if (!k || !(k->s = malloc(n + 1))) return NULL;
    memcpy(k->s, p, n);
    k->s[n] = 0;
    k->len = n;
    return k;
}

static ct_pk *int_node(vm *m, ct_pk_kind kind, int64_t v) {
    ct_pk *k = node(m, kind);
    if (k) k->i = v;
    return k;
}

static ct_status memo_put(vm *m, uint64_t idx) {
    if (!top(m)) return bad(m, "memo put without a value on the stack");
    if (idx > m->ops) return bad(m, "a memo index beyond the opcodes read");
    if (idx >= m->memo_cap) {   // grown geometrically; every slot up to idx exists
        size_t nc = m->memo_cap ? 2 * m->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        ct_pk **nm = realloc(m->memo, sizeof *nm * nc);
        if (!nm) return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
        for (size_t i = m->memo_cap; i < nc; i++) nm[i] = NULL;
        m->memo = nm, m->memo_cap = nc;
    }
    if (idx >= m->memo_n) m->memo_n = (size_t)idx + 1;
    m->memo_count += !m->memo[idx];
    m->memo[idx] = m->stack[m->sp - 1];
    return CT_OK;
}

static ct_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_n || !m->memo[idx]) return bad(m, "a memo index never put");
    return push(m, m->memo[idx]) ? CT_OK : ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
}

static int parse_decimal(const char *s, size_t n, int64_t *out) {
    if (n == 0 || n > 18) return 0;
    int neg = s[0] == '-';
    int64_t v = 0;
    for (size_t i = (size_t)neg; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return n > (size_t)neg;
}

static ct_status run(vm *m) {
    static ct_pk mark = {.kind = CT_PK_MARK};
#define NEED(n) if (!(p = take(m, (n)))) return bad(m, "truncated")
#define PUSH(x) if (!push(m, (x))) return no_room(m)
    for (;;) {
        const uint8_t *p;
        size_t at = m->at, len;
        m->ops++;
        NEED(1);
        uint8_t op = p[0];
        ct_status rc = CT_OK;
        ct_pk *a, *b, *c, *k;
        size_t from;
        switch (op) {
        case 0x80: NEED(1); break;                      // PROTO
        case 0x95: NEED(8); break;                      // FRAME
        case '.':                                       // STOP
            if (m->sp != 1 || m->stack[0]->kind == CT_PK_MARK) return bad(m, "STOP without exactly one value");
            m->pt->root = m->stack[0];
            return CT_OK;
        case '(': PUSH(&mark); break;
        case '0': if (!pop(m)) return bad(m, "POP on an empty stack"); break;   // (a MARK too, as Python pops it)
        case '1':
            if ((from = mark_at(m)) == (size_t)-1) return bad(m, "POP_MARK without a MARK");
            m->sp = from - 1;
            break;
        case '2':
            if (!(k = top(m))) return bad(m, "DUP without a value on the stack");
            PUSH(k);
            break;
        case 'N': PUSH(node(m, CT_PK_NONE)); break;
        case 0x88: PUSH(int_node(m, CT_PK_BOOL, 1)); break;
        case 0x89: PUSH(int_node(m, CT_PK_BOOL, 0)); break;
        case 'J': NEED(4); PUSH(int_node(m, CT_PK_INT, (int32_t)rd32(p))); break;
        case 'K': NEED(1); PUSH(int_node(m, CT_PK_INT, p[0])); break;
        case 'M': NEED(2); PUSH(int_node(m, CT_PK_INT, p[0] | p[1] << 8)); break;
        case 0x8a: {                                    // LONG1: little-endian two's complement
            NEED(1);
            size_t nb = p[0];
            if (nb > 8) return ct_fail(m->err, CT_STATUS_UNSUPPORTED, "pt: data.pkl: an integer of %zu bytes at byte %zu", nb, at);
            NEED(nb);
            uint64_t v = 0;
            for (size_t i = 0; i < nb; i++) v |= (uint64_t)p[i] << (8 * i);
            if (nb && nb < 8 && (p[nb - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * nb);
            PUSH(int_node(m, CT_PK_INT, (int64_t)v));
            break;
        }
        case 'I': {                                     // INT: decimal text; "01" True, "00" False
            const char *s = line(m, &len);
            int64_t v;
            if (!s) return bad(m, "INT without a line end");
            if (len == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) k = int_node(m, CT_PK_BOOL, s[1] == '1');
            else if (parse_decimal(s, len, &v)) k = int_node(m, CT_PK_INT, v);
            else return bad(m, "INT that is not a decimal number");
            PUSH(k);
            break;
        }
        case 'G': {                                     // BINFLOAT: big-endian double
            NEED(8);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = u << 8 | p[i];
            PUSH(k = node(m, CT_PK_FLOAT));
            memcpy(&k->f, &u, 8);
            break;
        }
        case 'X': case 'T': case 'B': NEED(4); len = rd32(p); goto bytes;      // BINUNICODE, BINSTRING, BINBYTES
        case 0x8c: case 'U': case 'C': NEED(1); len = p[0]; goto bytes;         // SHORT_BINUNICODE, ...
        case 0x8d: case 0x8e: NEED(8); len = rd64(p) > m->n ? m->n + 1 : (size_t)rd64(p); goto bytes;
        bytes:
            NEED(len);
            PUSH(str_node(m, op == 'B' || op == 'C' || op == 0x8e ? CT_PK_BYTES : CT_PK_STR, p, len));
            break;
        case ')': PUSH(node(m, CT_PK_TUPLE)); break;
        case ']': PUSH(node(m, CT_PK_LIST)); break;
        case '}': PUSH(node(m, CT_PK_DICT)); break;
        case 0x8f: PUSH(node(m, CT_PK_LIST)); break;    // EMPTY_SET: a list
        case 0x85: case 0x86: case 0x87:                // TUPLE1..3
            if (!values(m, (size_t)(op - 0x84))) return bad(m, "TUPLEn with too few values");
            PUSH(collect(m, CT_PK_TUPLE, m->sp - (size_t)(op - 0x84)));
            break;
        case 't': case 'l': case 'd': case 0x91:        // TUPLE, LIST, DICT, FROZENSET from the MARK
            if ((from = mark_at(m)) == (size_t)-1) return bad(m, "a collection without a MARK");
            if (op == 'd' && (m->sp - from) % 2) return bad(m, "DICT with a key without a value");
            PUSH(k = collect(m, op == 't' ? CT_PK_TUPLE : op == 'd' ? CT_PK_DICT : CT_PK_LIST, from));
            m->stack[m->sp - 2] = k, m->sp--;   // over the MARK
            break;
        case 'a': case 's':                             // APPEND, SETITEM
            if (!values(m, op == 'a' ? 2u : 3u)) return bad(m, "APPEND/SETITEM with too few values");
            from = m->sp - (op == 'a' ? 1 : 2);
            goto add;
        case 'e': case 'u': case 0x90:                  // APPENDS, SETITEMS, ADDITEMS
            if ((from = mark_at(m)) == (size_t)-1 || from < 2) return bad(m, "APPENDS/SETITEMS without a MARK");
            if (op == 'u' && (m->sp - from) % 2) return bad(m, "SETITEMS with a key without a value");
        add:
            c = m->stack[from - 1 - (op == 'e' || op == 'u' || op == 0x90)];
            if (c->kind == CT_PK_LIST || c->kind == CT_PK_DICT) {
                if ((op == 's' || op == 'u') != (c->kind == CT_PK_DICT))
                    return bad(m, "items added to a collection of the other kind");
                for (size_t i = from; i < m->sp; i++)
                    if (!add_item(c, m->stack[i])) return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
            } else if (c->kind != CT_PK_OBJECT) {   // an object's own items (a dict subclass): not kept
                return bad(m, "items added to a value that is no list, dict or object");
            }
            m->sp = from - (op == 'e' || op == 'u' || op == 0x90);
            break;
        case 'c': {                                     // GLOBAL module\nname\n
            size_t ml, nl;
            const char *mod = line(m, &ml), *name = mod ? line(m, &nl) : NULL;
            if (!name) return bad(m, "GLOBAL without two lines");
            PUSH(k = node(m, CT_PK_GLOBAL));
            if (!(k->s = malloc(ml + nl + 2))) return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
            memcpy(k->s, mod, ml), k->s[ml] = '.', memcpy(k->s + ml + 1, name, nl), k->s[ml + 1 + nl] = 0;
            k->len = ml + 1 + nl;
            break;
        }
        case 0x93:                                      // STACK_GLOBAL
            b = pop_value(m), a = pop_value(m);
            if (!a || !b || a->kind != CT_PK_STR || b->kind != CT_PK_STR) return bad(m, "STACK_GLOBAL without two strings");
            PUSH(k = node(m, CT_PK_GLOBAL));
            if (!(k->s = malloc(a->len + b->len + 2))) return ct_fail(m->err, CT_STATUS_NO_MEMORY, "out of memory");
            snprintf(k->s, a->len + b->len + 2, "%s.%s", a->s, b->s);
            k->len = strlen(k->s);
            break;
        case 'R': case 0x81:                            // REDUCE, NEWOBJ
            b = pop_value(m), a = pop_value(m);
            if (!a || !b || b->kind != CT_PK_TUPLE)
                return bad(m, "REDUCE/NEWOBJ without a callable and an argument tuple");
            if ((rc = call(m, a, b, &k))) return rc;
            PUSH(k);
            break;
        case 0x92:                                      // NEWOBJ_EX: cls, args, kwargs
            c = pop_value(m), b = pop_value(m), a = pop_value(m);
            if (!a || !b || !c || b->kind != CT_PK_TUPLE) return bad(m, "NEWOBJ_EX without cls, args and kwargs");
            if ((rc = call(m, a, b, &k))) return rc;
            PUSH(k);
            break;
        case 'b':                                       // BUILD
            b = pop_value(m);
            if (!b || !(a = top(m))) return bad(m, "BUILD with too few values");
            // a state (dict, slots) as a tuple: the dict, else the slots (an object's attributes
            // come from one dict here; a second BUILD replaces the first's)
            if (b->kind == CT_PK_TUPLE && b->n == 2) b = b->items[0]->kind == CT_PK_DICT ? b->items[0] : b->items[1];
            if (a->kind == CT_PK_OBJECT) a->state = b;
            break;
        case 'Q':                                       // BINPERSID
            a = pop_value(m);
            if ((rc = storage(m, a, &k))) return rc;
            PUSH(k);
            break;
        case 'q': NEED(1); if ((rc = memo_put(m, p[0]))) return rc; break;
        case 'r': NEED(4); if ((rc = memo_put(m, rd32(p)))) return rc; break;
        case 0x94: if ((rc = memo_put(m, m->memo_count))) return rc; break;   // MEMOIZE: at len(memo)
        case 'h': NEED(1); if ((rc = memo_get(m, p[0]))) return rc; break;
        case 'j': NEED(4); if ((rc = memo_get(m, rd32(p)))) return rc; break;
        case 'p': case 'g': {                           // PUT, GET: decimal text
            const char *s = line(m, &len);
            int64_t v;
            if (!s || !parse_decimal(s, len, &v) || v < 0) return bad(m, "PUT/GET without a decimal index");
            if ((rc = op == 'p' ? memo_put(m, (uint64_t)v) : memo_get(m, (uint64_t)v))) return rc;
            break;
        }
        default:
            return ct_fail(m->err, CT_STATUS_UNSUPPORTED, "pt: data.pkl: pickle opcode 0x%02x at byte %zu is not one a "
                           "saved graph uses", op, at);
        }
    }
#undef NEED
#undef PUSH
}

void ct_pt_free(ct_pt *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_nodes; i++) free(p->nodes[i]->s), free(p->nodes[i]->items), free(p->nodes[i]);
    free(p->nodes);
    ct_zip_free(&p->zip);
    if (p->map) ct_unmap_file(p->map, p->size);
    free(p);
}

static ct_status parse(ct_pt *p, const uint8_t *buf, size_t size, int mapped, ct_err *err) {
    if (size >= 2 && buf[0] == 0x80 && buf[1] <= 5)   // a pickle stream, not a zip
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "pt: PyTorch's legacy format (torch.save before 1.6, or with "
                       "_use_new_zipfile_serialization=False); load it and save it again with a current torch.save");
    ct_status rc = ct_zip_parse(&p->zip, buf, size, "pt", (mapped ? CT_ZIP_MAPPED : 0) | CT_ZIP_STORED_ONLY, err);
    if (rc) return rc;
    // data.pkl: the one member named <dir>/data.pkl (PyTorch names the directory after the file)
    const ct_zip_member *pkl = NULL;
    size_t pl = 0;
    for (int i = 0; i < p->zip.n; i++) {
        const char *nm = p->zip.members[i].name, *slash = strchr(nm, '/');
        if (slash && strcmp(slash + 1, "data.pkl") == 0) {
            if (pkl) return ct_fail(err, CT_STATUS_BAD_FORMAT, "pt: two data.pkl members (%s, %s)", pkl->name, nm);
            pkl = &p->zip.members[i], pl = (size_t)(slash + 1 - nm);
        }
    }
    if (!pkl)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "pt: no <archive>/data.pkl member: not a file of torch.save (PyTorch 1.6 "
                       "or later)");
    if (pkl->size > PT_MAX_PICKLE)
        return ct_fail(err, CT_STATUS_BAD_FORMAT, "pt: data.pkl is %zu bytes; a saved graph's is a few KB (at most %zu read)",
                       pkl->size, PT_MAX_PICKLE);
    p->dir = pkl->name, p->dir_len = pl;
    vm m = {.pt = p, .b = pkl->data, .n = pkl->size, .prefix = pkl->name, .prefix_len = pl, .err = err};
    rc = run(&m);
    free(m.stack), free(m.memo);
    return rc;
}

ct_status ct_pt_parse(ct_pt **out, const uint8_t *buf, size_t size, ct_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    ct_status rc = parse(*out, buf, size, 0, err);
    if (rc) ct_pt_free(*out), *out = NULL;
    return rc;
}

ct_status ct_pt_open(ct_ctx *ctx, ct_pt **out, const char *path, ct_err *err) {
    *out = NULL;
    void *map;
    size_t size;
    ct_status rc = ct_map_file(ctx, path, &map, &size, err);
    if (rc) return rc;
    ct_pt *p = calloc(1, sizeof *p);
    if (!p) {
        ct_unmap_file(map, size);
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory");
    }
    p->map = map, p->size = size;
    if ((rc = parse(p, map, size, 1, err))) {
        ct_pt_free(p);
        ct_err_where(err, path);
        return rc;
    }
    *out = p;
    return CT_OK;
}

const ct_pk *ct_pk_get(const ct_pk *d, const char *key) {
    if (!d || d->kind != CT_PK_DICT) return NULL;
    for (int64_t i = d->n / 2 * 2 - 2; i >= 0; i -= 2)   // the last of a repeated key, as a dict keeps it
        if (d->items[i]->kind == CT_PK_STR && strcmp(d->items[i]->s, key) == 0) return d->items[i + 1];
    return NULL;
}

const ct_pk *ct_pk_attr(const ct_pk *obj, const char *name) {
    return obj && obj->kind == CT_PK_OBJECT ? ct_pk_get(obj->state, name) : NULL;
}

// ----------------------------------------------------------------------------
// Writing

static void put(ct_pkw *w, const void *p, size_t n) {
    if (w->failed) return;
    if (w->n + n > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->n + n) nc *= 2;
        uint8_t *np = realloc(w->p, nc);
        if (!np) {
            w->failed = 1;
            return;
        }
        w->p = np, w->cap = nc;
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

void ct_pkw_op(ct_pkw *w, uint8_t op) { put(w, &op, 1); }

void ct_pkw_begin(ct_pkw *w) {
    memset(w, 0, sizeof *w);
    put(w, "\x80\x02", 2);
}

void ct_pkw_end(ct_pkw *w) { ct_pkw_op(w, '.'); }

void ct_pkw_free(ct_pkw *w) {
    free(w->p);
    memset(w, 0, sizeof *w);
}

void ct_pkw_none(ct_pkw *w) { ct_pkw_op(w, 'N'); }

void ct_pkw_bool(ct_pkw *w, int v) { ct_pkw_op(w, v ? 0x88 : 0x89); }

void ct_pkw_int(ct_pkw *w, int64_t v) {
    if (v >= 0 && v < 256) {
        uint8_t b[2] = {'K', (uint8_t)v};
        put(w, b, 2);
    } else if (v >= 0 && v < 65536) {
        uint8_t b[3] = {'M', (uint8_t)v, (uint8_t)(v >> 8)};
        put(w, b, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        uint32_t u = (uint32_t)v;
        uint8_t b[5] = {'J', (uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        put(w, b, 5);
    } else {   // LONG1 of 8 bytes
        uint8_t b[10] = {0x8a, 8};
        for (int i = 0; i < 8; i++) b[2 + i] = (uint8_t)((uint64_t)v >> (8 * i));
        put(w, b, 10);
    }
}

void ct_pkw_float(ct_pkw *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t b[9] = {'G'};
    for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    put(w, b, 9);
}

// Bytes of the well-formed UTF-8 sequence at p (n bytes left), 0 when there is none.
static size_t utf8_seq(const unsigned char *p, size_t n) {
    size_t len = p[0] < 0x80 ? 1 : p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
                                 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    // no overlong forms, surrogates or code points past U+10FFFF
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) || (p[0] == 0xF0 && p[1] < 0x90) ||
        (p[0] == 0xF4 && p[1] >= 0x90))
        return 0;
    return len;
}

void ct_pkw_str(ct_pkw *w, const char *s) {
    // a Python str is text: bytes that are no UTF-8 (a byte token's label) become U+FFFD, as
    // torch.load would fail on the whole file otherwise
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), out = 0;
    for (size_t i = 0, k; i < n; i += k ? k : 1) out += (k = utf8_seq(p + i, n - i)) ? k : 3;
    uint8_t b[5] = {'X', (uint8_t)out, (uint8_t)(out >> 8), (uint8_t)(out >> 16), (uint8_t)(out >> 24)};
    put(w, b, 5);
    for (size_t i = 0, k; i < n; i += k ? k : 1) {
        if ((k = utf8_seq(p + i, n - i))) put(w, p + i, k);
        else put(w, "\xEF\xBF\xBD", 3);
    }
}

void ct_pkw_global(ct_pkw *w, const char *module, const char *name) {
    ct_pkw_op(w, 'c');
    put(w, module, strlen(module));
    put(w, "\n", 1);
    put(w, name, strlen(name));
    put(w, "\n", 1);
}

void ct_pkw_tensor(ct_pkw *w, const char *key, ct_dtype dtype, int ndim, const int64_t *shape) {
    if (!ct_pt_storage_name(dtype) || ndim < 0 || ndim > CT_PK_MAX_DIMS) {   // nothing PyTorch could read back
        w->failed = 1;
        return;
    }
    int64_t numel = 1, stride[CT_PK_MAX_DIMS];
    for (int d = ndim; d-- > 0;) stride[d] = numel, numel *= shape[d];
    ct_pkw_global(w, "torch._utils", "_rebuild_tensor_v2");
    ct_pkw_op(w, '(');
    // the storage: a persistent id
    ct_pkw_op(w, '(');
    ct_pkw_str(w, "storage");
    ct_pkw_global(w, "torch", ct_pt_storage_name(dtype));
    ct_pkw_str(w, key);
    ct_pkw_str(w, "cpu");
    ct_pkw_int(w, numel);
    ct_pkw_op(w, 't');
    ct_pkw_op(w, 'Q');
    ct_pkw_int(w, 0);   // offset
    ct_pkw_op(w, '(');
    for (int d = 0; d < ndim; d++) ct_pkw_int(w, shape[d]);
    ct_pkw_op(w, 't');
    ct_pkw_op(w, '(');
    for (int d = 0; d < ndim; d++) ct_pkw_int(w, stride[d]);
    ct_pkw_op(w, 't');
    ct_pkw_bool(w, 0);   // requires_grad
    ct_pkw_global(w, "collections", "OrderedDict");
    ct_pkw_op(w, ')');
    ct_pkw_op(w, 'R');
    ct_pkw_op(w, 't');
    ct_pkw_op(w, 'R');
}
