/*
 * trailwarden.agent._envelope: a CloudTrail document's records wrapped as the
 * Wazuh aws-s3 wodle's messages, straight from the document's bytes.
 *
 * The reference is envelope.py (FileWrapper.wrap_owned over the records of
 * orjson.loads(document)); this is the same function without building a Python
 * object per JSON value: one pass over the bytes that validates the document as
 * strictly as orjson does and writes each record's message as orjson would
 * serialise it (compact, raw UTF-8, orjson's escapes), dropping nulls and
 * collapsing one-element lists through dicts, with the wodle's casts. That
 * object tree was ~3/4 of the agent's work per record (parse, walk, dump, free).
 *
 * Whatever this file does not reproduce exactly goes back to Python, so the
 * result is always the reference's:
 *   - the whole document (wrap_records returns None) when it is not valid JSON,
 *     not a {"Records": [objects]} or [objects] document, nests deeper than
 *     MAX_DEPTH, or has a record longer than max_record_bytes as written; the
 *     caller then takes its usual path, which reports what is wrong;
 *   - one record (its bytes as written take the message's place in the list)
 *     holding a float, an integer orjson would not keep as written, a duplicate
 *     key, a list where the wodle's casts or the account fallback look, or a
 *     key the envelope itself sets (log_info, aws_account_id, source_ip_address).
 *
 * wrap_piece does the same for a records array read a piece at a time (a
 * large object inflated piece by piece): it takes whole records as far as the
 * piece goes and says where the next piece starts.
 *
 * Bounded: recursion at most MAX_DEPTH, buffers at most a few times one record,
 * the duplicate-key table's probes at most MAX_PROBES (hostile keys that collide
 * make the record take the Python path, which is linear).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Nesting of a record (itself included) handled here; at most the scanner's
 * MAX_RECORD_DEPTH (128) so a deeper record is always judged by Python. */
#define MAX_DEPTH 64
/* Probes of the duplicate-key table before giving the record to Python. */
#define MAX_PROBES 32
/* Integers with at most this many digits fit in an int64, as orjson keeps them. */
#define MAX_PLAIN_DIGITS 18

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

typedef struct {
    uint64_t hash;
    uint64_t object; /* serial of the object holding the key; 0: empty */
    Py_ssize_t offset; /* into the key arena */
    Py_ssize_t len;
} Slot;

enum Role { PLAIN, TOP, REQUEST_PARAMETERS, RESPONSE_ELEMENTS, USER_IDENTITY };

typedef struct {
    const unsigned char *begin;
    const unsigned char *p;
    const unsigned char *end;
    Buf out;   /* the current record's message */
    Buf keys;  /* the current record's keys, canonical, for duplicate checks */
    Slot *slots;
    size_t slot_mask;
    Py_ssize_t slots_used;
    uint64_t serial;        /* last object serial handed out */
    uint64_t record_first;  /* slots of older records count as empty */
    int depth;
    int invalid;      /* the document goes back to Python */
    int no_memory;
    int record_bail;  /* this record goes back to Python */
    int need_account; /* no account from the S3 key: the record's own ids */
    int have_source;
    Py_ssize_t ip_off, ip_len;           /* sourceIPAddress, canonical, in out */
    Py_ssize_t recipient_off, recipient_len;
    Py_ssize_t caller_off, caller_len;   /* userIdentity.accountId */
} Parser;

/* ---- output ------------------------------------------------------------- */

static int grow(Parser *ps, Buf *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            ps->no_memory = 1;
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_RawRealloc(b->data, (size_t)cap);
    if (data == NULL) {
        ps->no_memory = 1;
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int put(Parser *ps, const void *s, Py_ssize_t n)
{
    if (ps->out.len + n > ps->out.cap && grow(ps, &ps->out, n) < 0)
        return -1;
    memcpy(ps->out.data + ps->out.len, s, (size_t)n);
    ps->out.len += n;
    return 0;
}

#define PUT_LITERAL(ps, text) put((ps), (text), (Py_ssize_t)(sizeof(text) - 1))

static inline int put_byte(Parser *ps, char c)
{
    if (ps->out.len + 1 > ps->out.cap && grow(ps, &ps->out, 1) < 0)
        return -1;
    ps->out.data[ps->out.len++] = c;
    return 0;
}

/* ---- lexing ------------------------------------------------------------- */

static inline void skip_ws(Parser *ps)
{
    const unsigned char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

static inline int fail(Parser *ps)
{
    ps->invalid = 1;
    return -1;
}

static int hex4(const unsigned char *p, unsigned *value)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *value = v;
    return 0;
}

/* Bytes of one valid UTF-8 sequence starting at p (Unicode table 3-7), or 0. */
static inline int utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF)
        return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[2] & 0xC0) != 0x80)
            return 0;
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return p[1] >= lo && p[1] <= hi ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return p[1] >= lo && p[1] <= hi ? 4 : 0;
    }
    return 0;
}

static int put_code_point(Parser *ps, unsigned cp)
{
    static const char hex[] = "0123456789abcdef";
    char b[6];
    switch (cp) {
    case '"': return PUT_LITERAL(ps, "\\\"");
    case '\\': return PUT_LITERAL(ps, "\\\\");
    case '\b': return PUT_LITERAL(ps, "\\b");
    case '\f': return PUT_LITERAL(ps, "\\f");
    case '\n': return PUT_LITERAL(ps, "\\n");
    case '\r': return PUT_LITERAL(ps, "\\r");
    case '\t': return PUT_LITERAL(ps, "\\t");
    }
    if (cp < 0x20) {
        b[0] = '\\'; b[1] = 'u'; b[2] = '0'; b[3] = '0';
        b[4] = hex[cp >> 4]; b[5] = hex[cp & 15];
        return put(ps, b, 6);
    }
    if (cp < 0x80)
        return put_byte(ps, (char)cp);
    if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        return put(ps, b, 2);
    }
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return put(ps, b, 3);
    }
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    return put(ps, b, 4);
}

/* The first byte at or after p that a string cannot copy as it is: a quote,
 * a backslash, a control character or a non-ASCII byte (or end). Strings are
 * most of a record's bytes: 16 at a time where SSE2 is there (every x86-64). */
static inline const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i chunk = _mm_loadu_si128((const __m128i *)p);
        /* Signed: bytes >= 0x80 are negative, so "< 0x20" catches them too. */
        __m128i special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(chunk, quote), _mm_cmpeq_epi8(chunk, backslash)),
            _mm_cmplt_epi8(chunk, space));
        int mask = _mm_movemask_epi8(special);
        if (mask != 0)
            return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* A string at ps->p (on its opening quote), written canonically with quotes. */
static int string(Parser *ps)
{
    const unsigned char *p = ps->p + 1, *end = ps->end;
    if (put_byte(ps, '"') < 0)
        return -1;
    for (;;) {
        const unsigned char *run = p;
        p = plain_run(p, end);
        if (p > run && put(ps, run, p - run) < 0)
            return -1;
        if (p >= end)
            return fail(ps);
        unsigned c = *p;
        if (c == '"') {
            ps->p = p + 1;
            return put_byte(ps, '"');
        }
        if (c == '\\') {
            if (end - p < 2)
                return fail(ps);
            unsigned e = p[1], cp;
            p += 2;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (end - p < 4 || hex4(p, &cp) < 0)
                    return fail(ps);
                p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(ps); /* a lone low surrogate: orjson refuses it */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned low;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) < 0
                        || low < 0xDC00 || low > 0xDFFF)
                        return fail(ps);
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                break;
            default:
                return fail(ps);
            }
            if (put_code_point(ps, cp) < 0)
                return -1;
            continue;
        }
        if (c < 0x20)
            return fail(ps); /* a raw control character */
        int n = utf8_sequence(p, end);
        if (n == 0)
            return fail(ps);
        if (put(ps, p, n) < 0)
            return -1;
        p += n;
    }
}

/* A number: JSON's grammar; anything but a plain integer orjson writes back
 * as written (a float, -0, more digits than an int64 surely holds) is copied
 * and sends the record to Python. */
static int number(Parser *ps)
{
    const unsigned char *start = ps->p, *p = start, *end = ps->end;
    int plain = 1;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return fail(ps);
    const unsigned char *digits = p;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return fail(ps);
        if (digits > start)
            plain = 0; /* -0: orjson reads the integer 0 */
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(ps);
    }
    if (p - digits > MAX_PLAIN_DIGITS)
        plain = 0;
    if (p < end && *p == '.') {
        plain = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(ps);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        plain = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(ps);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (!plain)
        ps->record_bail = 1;
    ps->p = p;
    return put(ps, start, p - start);
}

static int literal(Parser *ps, const char *word, Py_ssize_t n)
{
    if (ps->end - ps->p < n || memcmp(ps->p, word, (size_t)n) != 0)
        return fail(ps);
    ps->p += n;
    return put(ps, word, n);
}

/* ---- duplicate keys ----------------------------------------------------- */

static uint64_t key_hash(const char *s, Py_ssize_t n, uint64_t object)
{
    uint64_t h = 1469598103934665603ULL ^ (object * 0x9E3779B97F4A7C15ULL);
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int rehash(Parser *ps)
{
    size_t size = ps->slots ? (ps->slot_mask + 1) * 2 : 256;
    Slot *slots = PyMem_RawCalloc(size, sizeof(Slot));
    if (slots == NULL) {
        ps->no_memory = 1;
        return -1;
    }
    if (ps->slots) {
        for (size_t i = 0; i <= ps->slot_mask; i++) {
            Slot *s = &ps->slots[i];
            if (s->object < ps->record_first)
                continue;
            size_t j = (size_t)s->hash & (size - 1);
            while (slots[j].object != 0)
                j = (j + 1) & (size - 1);
            slots[j] = *s;
        }
        PyMem_RawFree(ps->slots);
    }
    ps->slots = slots;
    ps->slot_mask = size - 1;
    return 0;
}

/* Remember the key just written at out[at:]; a second one in the same object
 * (orjson keeps the first position and the last value) sends the record to
 * Python, as does a probe sequence hostile keys made long. */
static int note_key(Parser *ps, uint64_t object, Py_ssize_t at)
{
    const char *key = ps->out.data + at;
    Py_ssize_t n = ps->out.len - at;
    if (ps->slots == NULL || (size_t)(ps->slots_used + 1) * 2 > ps->slot_mask + 1) {
        if (rehash(ps) < 0)
            return -1;
    }
    uint64_t h = key_hash(key, n, object);
    size_t j = (size_t)h & ps->slot_mask;
    for (int probes = 0;; probes++) {
        Slot *s = &ps->slots[j];
        if (s->object < ps->record_first) {
            Py_ssize_t offset = ps->keys.len;
            if (ps->keys.len + n > ps->keys.cap && grow(ps, &ps->keys, n) < 0)
                return -1;
            memcpy(ps->keys.data + offset, key, (size_t)n);
            ps->keys.len += n;
            s->hash = h;
            s->object = object;
            s->offset = offset;
            s->len = n;
            ps->slots_used++;
            return 0;
        }
        if (s->hash == h && s->object == object && s->len == n
            && memcmp(ps->keys.data + s->offset, key, (size_t)n) == 0) {
            ps->record_bail = 1;
            return 0;
        }
        if (probes >= MAX_PROBES) {
            ps->record_bail = 1;
            return 0;
        }
        j = (j + 1) & ps->slot_mask;
    }
}

/* ---- values ------------------------------------------------------------- */

static int value(Parser *ps);
static int clean_object(Parser *ps, enum Role role);

/* An object's key and colon, written as `"key":`; the key's canonical text is
 * out[*key_at + 1 : *key_end - 1]. */
static int member_key(Parser *ps, uint64_t object, Py_ssize_t *key_at, Py_ssize_t *key_end)
{
    if (ps->p >= ps->end || *ps->p != '"')
        return fail(ps);
    *key_at = ps->out.len;
    if (string(ps) < 0)
        return -1;
    *key_end = ps->out.len;
    if (note_key(ps, object, *key_at) < 0)
        return -1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return fail(ps);
    ps->p++;
    skip_ws(ps);
    return put_byte(ps, ':');
}

/* Into the container opening at ps->p: 1 if it closes at once (`close`
 * follows), 0 if an item follows, -1 if nested too deeply. */
static int enter(Parser *ps, unsigned char close)
{
    if (++ps->depth > MAX_DEPTH)
        return fail(ps);
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    return 0;
}

/* After a member or element: 1 at the closing bracket, 0 after a comma. */
static int next_item(Parser *ps, unsigned char close)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps);
    if (*ps->p == close) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    if (*ps->p != ',')
        return fail(ps);
    ps->p++;
    skip_ws(ps);
    return 0;
}

/* Any value written back unchanged (inside lists, the wodle changes nothing). */
static int plain_object(Parser *ps)
{
    uint64_t object = ++ps->serial;
    int empty = enter(ps, '}');
    if (empty < 0 || put_byte(ps, '{') < 0)
        return -1;
    if (empty)
        return put_byte(ps, '}');
    for (;;) {
        Py_ssize_t key_at, key_end;
        if (member_key(ps, object, &key_at, &key_end) < 0 || value(ps) < 0)
            return -1;
        int r = next_item(ps, '}');
        if (r < 0)
            return -1;
        if (r)
            return put_byte(ps, '}');
        if (put_byte(ps, ',') < 0)
            return -1;
    }
}

/* A list; *count gets its number of elements (up to 2). */
static int array(Parser *ps, int *count)
{
    *count = 0;
    int empty = enter(ps, ']');
    if (empty < 0 || put_byte(ps, '[') < 0)
        return -1;
    if (empty)
        return put_byte(ps, ']');
    for (;;) {
        if (value(ps) < 0)
            return -1;
        if (*count < 2)
            (*count)++;
        int r = next_item(ps, ']');
        if (r < 0)
            return -1;
        if (r)
            return put_byte(ps, ']');
        if (put_byte(ps, ',') < 0)
            return -1;
    }
}

static int value(Parser *ps)
{
    if (ps->p >= ps->end)
        return fail(ps);
    int count;
    switch (*ps->p) {
    case '"': return string(ps);
    case '{': return plain_object(ps);
    case '[': return array(ps, &count);
    case 't': return literal(ps, "true", 4);
    case 'f': return literal(ps, "false", 5);
    case 'n': return literal(ps, "null", 4);
    default: return number(ps);
    }
}

static int key_is(Parser *ps, Py_ssize_t key_at, Py_ssize_t key_end, const char *name)
{
    Py_ssize_t n = (Py_ssize_t)strlen(name);
    return key_end - key_at - 2 == n && memcmp(ps->out.data + key_at + 1, name, (size_t)n) == 0;
}

/* What the wodle does to one member's value, by where the member is. */
enum Treatment {
    CLEAN,           /* drop null, collapse a one-element list, clean dicts */
    SOURCE,          /* top-level source: "cloudtrail" whatever it was */
    WRAP_VALUE,      /* top-level tags: a concrete value becomes {"value": v} */
    CAST_TO_STRING,  /* {"string": str(v)} unless a dict */
    WRAP_BOOL,       /* requestParameters.disableApiTermination: {"value": bool} */
    WRAP_ARN,        /* responseElements.role: {"arn": concrete} */
    CAPTURE_IP,      /* top-level sourceIPAddress, for source_ip_address */
    CAPTURE_RECIPIENT,
    CAPTURE_CALLER,
    NOT_HERE,        /* a key the envelope sets itself: Python's job */
};

static enum Treatment treatment(Parser *ps, enum Role role, Py_ssize_t at, Py_ssize_t end,
                                enum Role *child)
{
    *child = PLAIN;
    switch (role) {
    case TOP:
        if (key_is(ps, at, end, "source"))
            return SOURCE;
        if (key_is(ps, at, end, "requestParameters")) {
            *child = REQUEST_PARAMETERS;
            return CAST_TO_STRING;
        }
        if (key_is(ps, at, end, "responseElements")) {
            *child = RESPONSE_ELEMENTS;
            return CAST_TO_STRING;
        }
        if (key_is(ps, at, end, "additionalEventData"))
            return CAST_TO_STRING;
        if (key_is(ps, at, end, "tags"))
            return WRAP_VALUE;
        if (key_is(ps, at, end, "sourceIPAddress"))
            return CAPTURE_IP;
        if (key_is(ps, at, end, "recipientAccountId"))
            return CAPTURE_RECIPIENT;
        if (key_is(ps, at, end, "userIdentity")) {
            *child = USER_IDENTITY;
            return CLEAN;
        }
        if (key_is(ps, at, end, "log_info") || key_is(ps, at, end, "aws_account_id")
            || key_is(ps, at, end, "source_ip_address"))
            return NOT_HERE;
        return CLEAN;
    case REQUEST_PARAMETERS:
        return key_is(ps, at, end, "disableApiTermination") ? WRAP_BOOL : CLEAN;
    case RESPONSE_ELEMENTS:
        return key_is(ps, at, end, "role") ? WRAP_ARN : CLEAN;
    case USER_IDENTITY:
        return key_is(ps, at, end, "accountId") ? CAPTURE_CALLER : CLEAN;
    default:
        return CLEAN;
    }
}

/* A concrete value wrapped as {"<name>": v}, as the wodle's wrapper dicts. */
static int wrapped(Parser *ps, const char *open, Py_ssize_t open_len)
{
    if (put(ps, open, open_len) < 0 || value(ps) < 0)
        return -1;
    return put_byte(ps, '}');
}

static int cast_to_string(Parser *ps)
{
    unsigned char c = *ps->p;
    if (c == '"')
        return wrapped(ps, "{\"string\":", 10);
    if (c == 't') {
        if (literal(ps, "true", 4) < 0)
            return -1;
        ps->out.len -= 4;
        return PUT_LITERAL(ps, "{\"string\":\"True\"}");
    }
    if (c == 'f') {
        if (literal(ps, "false", 5) < 0)
            return -1;
        ps->out.len -= 5;
        return PUT_LITERAL(ps, "{\"string\":\"False\"}");
    }
    /* A number: str() of an int is its digits. */
    if (PUT_LITERAL(ps, "{\"string\":\"") < 0 || number(ps) < 0)
        return -1;
    return PUT_LITERAL(ps, "\"}");
}

/* A dict reached through dicts from the record: nulls dropped, one-element
 * lists collapsed, dicts cleaned, and the wodle's casts where `role` says. */
static int clean_object(Parser *ps, enum Role role)
{
    uint64_t object = ++ps->serial;
    int empty = enter(ps, '}');
    if (empty < 0 || put_byte(ps, '{') < 0)
        return -1;
    Py_ssize_t open = ps->out.len; /* a member after this needs a comma first */
    if (!empty) {
        for (;;) {
            Py_ssize_t mark = ps->out.len, key_at, key_end;
            if (mark > open && put_byte(ps, ',') < 0)
                return -1;
            if (member_key(ps, object, &key_at, &key_end) < 0)
                return -1;
            if (ps->p >= ps->end)
                return fail(ps);
            enum Role child;
            enum Treatment how = treatment(ps, role, key_at, key_end, &child);
            unsigned char c = *ps->p;
            int r = 0;
            if (how == NOT_HERE)
                ps->record_bail = 1;
            if (how == SOURCE) {
                Py_ssize_t value_at = ps->out.len;
                if (value(ps) < 0)
                    return -1;
                ps->out.len = value_at;
                r = PUT_LITERAL(ps, "\"cloudtrail\"");
                ps->have_source = 1;
            } else if (c == 'n') {
                r = literal(ps, "null", 4);
                ps->out.len = mark; /* dropped, comma and all */
            } else if (c == '{') {
                r = clean_object(ps, child);
            } else if (c == '[') {
                /* Where the wodle looks at the value after collapsing, Python decides. */
                if (how != CLEAN || (role == TOP && child == USER_IDENTITY && ps->need_account))
                    ps->record_bail = 1;
                Py_ssize_t at = ps->out.len;
                int count;
                r = array(ps, &count);
                if (r == 0 && count == 1) {
                    /* [x] -> x: drop the brackets; x itself is not visited. */
                    Py_ssize_t inner = ps->out.len - at - 2;
                    memmove(ps->out.data + at, ps->out.data + at + 1, (size_t)inner);
                    ps->out.len = at + inner;
                }
            } else if (how == CAST_TO_STRING) {
                r = cast_to_string(ps);
            } else if (how == WRAP_VALUE) {
                r = wrapped(ps, "{\"value\":", 9);
            } else if (how == WRAP_BOOL && (c == 't' || c == 'f')) {
                r = wrapped(ps, "{\"value\":", 9);
            } else if (how == WRAP_ARN) {
                r = wrapped(ps, "{\"arn\":", 7);
            } else if (c == '"' && (how == CAPTURE_IP || how == CAPTURE_RECIPIENT
                                    || how == CAPTURE_CALLER)) {
                Py_ssize_t at = ps->out.len;
                r = string(ps);
                Py_ssize_t off = at + 1, len = ps->out.len - at - 2;
                if (how == CAPTURE_IP) {
                    ps->ip_off = off;
                    ps->ip_len = len;
                } else if (how == CAPTURE_RECIPIENT) {
                    ps->recipient_off = off;
                    ps->recipient_len = len;
                } else {
                    ps->caller_off = off;
                    ps->caller_len = len;
                }
            } else {
                r = value(ps);
            }
            if (r < 0)
                return -1;
            r = next_item(ps, '}');
            if (r < 0)
                return -1;
            if (r)
                break;
        }
    }
    return put_byte(ps, '}');
}

/* ---- the envelope ------------------------------------------------------- */

/* One IPv4 address as the indexer's ip type reads it: four decimal octets
 * 0-255 without leading zeros (envelope.py's _IPV4). */
static int is_ipv4(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
        Py_ssize_t start = i;
        unsigned v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        Py_ssize_t digits = i - start;
        if (digits == 0 || v > 255 || (digits > 1 && s[start] == '0'))
            return 0;
    }
    return i == n;
}

/* The message of the record at ps->p, appended to out: head, the cleaned
 * members, source, aws_account_id, source_ip_address, two closing braces. */
static int record(Parser *ps, const char *head, Py_ssize_t head_len, const char *account,
                  Py_ssize_t account_len)
{
    ps->keys.len = 0;
    ps->slots_used = 0;
    ps->record_first = ps->serial + 1;
    ps->record_bail = 0;
    ps->have_source = 0;
    ps->ip_len = ps->recipient_len = ps->caller_len = -1;
    /* The head ends with the comma before the payload's first member: the
     * record's "{" goes in its place, and becomes that comma again below. */
    if (put(ps, head, head_len) < 0)
        return -1;
    ps->out.len--;
    Py_ssize_t brace = ps->out.len;
    if (clean_object(ps, TOP) < 0)
        return -1;
    ps->out.len--; /* the record's "}" */
    if (ps->out.len == brace + 1)
        ps->out.len = brace; /* no member left: head's log_info comes last */
    else
        ps->out.data[brace] = ',';
    if (!ps->have_source && PUT_LITERAL(ps, ",\"source\":\"cloudtrail\"") < 0)
        return -1;
    if (account != NULL) {
        if (PUT_LITERAL(ps, ",\"aws_account_id\":") < 0 || put(ps, account, account_len) < 0)
            return -1;
    } else {
        Py_ssize_t off = ps->recipient_off, len = ps->recipient_len;
        if (len <= 0) {
            off = ps->caller_off;
            len = ps->caller_len;
        }
        /* The id as the record has it, copied from out: room first, so that
         * out does not move under the copy. */
        if (len > 0) {
            if (grow(ps, &ps->out, len + 24) < 0)
                return -1;
            if (PUT_LITERAL(ps, ",\"aws_account_id\":\"") < 0
                || put(ps, ps->out.data + off, len) < 0 || put_byte(ps, '"') < 0)
                return -1;
        }
    }
    if (ps->ip_len > 0 && is_ipv4(ps->out.data + ps->ip_off, ps->ip_len)) {
        if (grow(ps, &ps->out, ps->ip_len + 24) < 0)
            return -1;
        if (PUT_LITERAL(ps, ",\"source_ip_address\":\"") < 0
            || put(ps, ps->out.data + ps->ip_off, ps->ip_len) < 0 || put_byte(ps, '"') < 0)
            return -1;
    }
    return PUT_LITERAL(ps, "}}");
}

/* Where one record's result lies: its message in out, or (raw) its bytes as
 * written in the document. */
typedef struct {
    Py_ssize_t offset;
    Py_ssize_t len;
    int raw;
} Entry;

typedef struct {
    Entry *items;
    Py_ssize_t len;
    Py_ssize_t cap;
} Entries;

static int add_entry(Parser *ps, Entries *e, Py_ssize_t offset, Py_ssize_t len, int raw)
{
    if (e->len == e->cap) {
        Py_ssize_t cap = e->cap ? e->cap * 2 : 1024;
        Entry *items = PyMem_RawRealloc(e->items, (size_t)cap * sizeof(Entry));
        if (items == NULL) {
            ps->no_memory = 1;
            return -1;
        }
        e->items = items;
        e->cap = cap;
    }
    e->items[e->len].offset = offset;
    e->items[e->len].len = len;
    e->items[e->len].raw = raw;
    e->len++;
    return 0;
}

typedef struct {
    const char *head;
    Py_ssize_t head_len;
    const char *account; /* NULL: the record's own ids */
    Py_ssize_t account_len;
    Py_ssize_t max_record_bytes;
    Py_ssize_t start;
    Entries entries;
} Job;

/* One record at ps->p ('{'): its message appended to out, or, where Python
 * must wrap it, its place in the document; kept if index >= job->start. */
static int take_record(Parser *ps, Job *job, Py_ssize_t index)
{
    const unsigned char *first = ps->p;
    Py_ssize_t base = ps->out.len;
    if (record(ps, job->head, job->head_len, job->account, job->account_len) < 0)
        return -1;
    Py_ssize_t written = ps->p - first;
    if (written > job->max_record_bytes)
        return fail(ps); /* the scanner quarantines it, as written */
    int kept = index >= job->start;
    if (!kept || ps->record_bail)
        ps->out.len = base;
    if (!kept)
        return 0;
    if (ps->record_bail)
        return add_entry(ps, &job->entries, first - ps->begin, written, 1);
    return add_entry(ps, &job->entries, base, ps->out.len - base, 0);
}

/* The records array at ps->p ('['), whole. */
static int records(Parser *ps, Job *job)
{
    int empty = enter(ps, ']');
    if (empty)
        return empty < 0 ? -1 : 0;
    for (Py_ssize_t index = 0;; index++) {
        if (ps->p >= ps->end || *ps->p != '{')
            return fail(ps); /* not an object: the scanner says what it is */
        if (take_record(ps, job, index) < 0)
            return -1;
        int r = next_item(ps, ']');
        if (r < 0)
            return -1;
        if (r)
            return 0;
    }
}

/* How a piece of a records array ended (wrap_chunk). */
enum { PIECE_USED = 0, PIECE_CLOSED = 1, PIECE_STOPPED = 2 };

/* Records of an array read in pieces, from ps->p: just after its '[' (first)
 * or after a record. As far as whole records go; *consumed is where the next
 * piece starts (before the separator of a record not taken). */
static int piece(Parser *ps, Job *job, int first, Py_ssize_t *consumed, Py_ssize_t *taken)
{
    for (Py_ssize_t index = 0;; index++) {
        *taken = index;
        *consumed = ps->p - ps->begin;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return PIECE_USED;
        if (*ps->p == ']') {
            ps->p++;
            *consumed = ps->p - ps->begin;
            return PIECE_CLOSED;
        }
        if (!first) {
            if (*ps->p != ',')
                return PIECE_STOPPED;
            ps->p++;
            skip_ws(ps);
        }
        if (ps->p >= ps->end || *ps->p != '{')
            return PIECE_STOPPED;
        ps->depth = 2; /* {"Records": [ */
        if (take_record(ps, job, index) < 0) {
            if (ps->no_memory)
                return -1;
            /* Cut off by the piece's end, or bad: the caller tells which. */
            ps->invalid = 0;
            return PIECE_STOPPED;
        }
        first = 0;
    }
}

/* The document's records array: {"Records": [...]} (other members are only
 * checked) or a bare [...]. */
static int document(Parser *ps, Job *job)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps);
    if (*ps->p == '[') {
        if (records(ps, job) < 0)
            return -1;
    } else if (*ps->p == '{') {
        int seen = 0;
        if (enter(ps, '}') != 0)
            return fail(ps); /* too deep cannot be; {} has no records */
        for (;;) {
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps);
            Py_ssize_t mark = ps->out.len;
            if (string(ps) < 0)
                return -1;
            int is_records = ps->out.len - mark == 9
                             && memcmp(ps->out.data + mark, "\"Records\"", 9) == 0;
            ps->out.len = mark;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail(ps);
            ps->p++;
            skip_ws(ps);
            if (is_records) {
                if (seen || ps->p >= ps->end || *ps->p != '[')
                    return fail(ps); /* twice, or not a list: Python decides */
                seen = 1;
                if (records(ps, job) < 0)
                    return -1;
            } else {
                if (value(ps) < 0)
                    return -1;
                ps->out.len = mark; /* only checked */
            }
            int r = next_item(ps, '}');
            if (r < 0)
                return -1;
            if (r)
                break;
        }
        if (!seen)
            return fail(ps);
    } else {
        return fail(ps);
    }
    skip_ws(ps);
    if (ps->p != ps->end)
        return fail(ps);
    return 0;
}

/* The arguments both entry points share; -1 with an exception set. */
static int setup(Parser *ps, Job *job, Py_buffer *doc, Py_buffer *head, PyObject *account)
{
    if (account != Py_None) {
        if (!PyBytes_Check(account)) {
            PyErr_SetString(PyExc_TypeError, "account must be bytes or None");
            return -1;
        }
        job->account = PyBytes_AS_STRING(account);
        job->account_len = PyBytes_GET_SIZE(account);
    }
    if (head->len < 1 || ((const char *)head->buf)[head->len - 1] != ',') {
        PyErr_SetString(PyExc_ValueError, "head must end with the comma before the payload");
        return -1;
    }
    job->head = head->buf;
    job->head_len = head->len;
    ps->begin = ps->p = doc->buf;
    ps->end = ps->p + doc->len;
    ps->need_account = job->account == NULL;
    return 0;
}

/* The kept records as a list of str (messages) and bytes (for Python). */
static PyObject *entries_list(Parser *ps, Job *job)
{
    if (ps->no_memory)
        return PyErr_NoMemory();
    PyObject *items = PyList_New(job->entries.len);
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < job->entries.len; i++) {
        Entry *e = &job->entries.items[i];
        PyObject *item = e->raw
            ? PyBytes_FromStringAndSize((const char *)ps->begin + e->offset, e->len)
            : PyUnicode_DecodeUTF8(ps->out.data + e->offset, e->len, NULL);
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, i, item);
    }
    return items;
}

static void release(Parser *ps, Job *job, Py_buffer *doc, Py_buffer *head)
{
    PyMem_RawFree(ps->out.data);
    PyMem_RawFree(ps->keys.data);
    PyMem_RawFree(ps->slots);
    PyMem_RawFree(job->entries.items);
    PyBuffer_Release(doc);
    PyBuffer_Release(head);
}

PyDoc_STRVAR(wrap_records_doc,
"wrap_records(document, head, account, max_record_bytes, start)\n--\n\n"
"The wodle messages of a CloudTrail document's records from index `start` on:\n"
"a list holding, per record, its message (str) or, where Python must wrap it,\n"
"its bytes as written; None when the whole document must take the Python path.\n"
"`head` is the message's bytes before the record's first member (ending in a\n"
"comma), `account` the JSON string of aws_account_id or None to fall back to\n"
"the record's recipientAccountId and userIdentity.accountId. The document is\n"
"read without the GIL (run it on a worker thread).");

static PyObject *wrap_records(PyObject *self, PyObject *args)
{
    Py_buffer doc, head;
    PyObject *account, *result = NULL;
    Job job;
    Parser ps;
    memset(&job, 0, sizeof job);
    memset(&ps, 0, sizeof ps);
    if (!PyArg_ParseTuple(args, "y*y*Onn:wrap_records", &doc, &head, &account,
                          &job.max_record_bytes, &job.start))
        return NULL;
    if (setup(&ps, &job, &doc, &head, account) == 0) {
        Py_BEGIN_ALLOW_THREADS
        document(&ps, &job);
        Py_END_ALLOW_THREADS
        if (ps.invalid && !ps.no_memory)
            result = Py_NewRef(Py_None);
        else
            result = entries_list(&ps, &job);
    }
    release(&ps, &job, &doc, &head);
    return result;
}

PyDoc_STRVAR(wrap_piece_doc,
"wrap_piece(piece, head, account, max_record_bytes, start, first)\n--\n\n"
"wrap_records for a records array read in pieces (a large object, inflated a\n"
"piece at a time). `piece` starts just after the array's '[' (`first`) or\n"
"after a record. Returns (items, taken, consumed, status): the records from\n"
"index `start` of this piece on, as wrap_records gives them; how many records\n"
"the piece held (kept or not); where the next piece starts; and 0 if every\n"
"whole record was taken, 1 if the array closed (at `consumed`), 2 if the next\n"
"record could not be taken: cut off by the end of the piece, or bad (the\n"
"caller gives it more bytes, or the scanner).");

static PyObject *wrap_piece(PyObject *self, PyObject *args)
{
    Py_buffer doc, head;
    PyObject *account, *result = NULL;
    int first;
    Job job;
    Parser ps;
    memset(&job, 0, sizeof job);
    memset(&ps, 0, sizeof ps);
    if (!PyArg_ParseTuple(args, "y*y*Onnp:wrap_piece", &doc, &head, &account,
                          &job.max_record_bytes, &job.start, &first))
        return NULL;
    if (setup(&ps, &job, &doc, &head, account) == 0) {
        Py_ssize_t consumed = 0, taken = 0;
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = piece(&ps, &job, first, &consumed, &taken);
        Py_END_ALLOW_THREADS
        PyObject *items = entries_list(&ps, &job);
        if (items != NULL)
            result = Py_BuildValue("Nnni", items, taken, consumed, status);
    }
    release(&ps, &job, &doc, &head);
    return result;
}

static PyMethodDef methods[] = {
    {"wrap_records", wrap_records, METH_VARARGS, wrap_records_doc},
    {"wrap_piece", wrap_piece, METH_VARARGS, wrap_piece_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "trailwarden.agent._envelope",
    .m_doc = "CloudTrail records wrapped as Wazuh aws-s3 wodle messages, in C (see envelope.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__envelope(void)
{
    return PyModule_Create(&module);
}
