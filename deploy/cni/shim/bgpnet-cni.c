/*
 * bgpnet-cni: the thin CNI plugin binary that hands each request to the node agent.
 *
 * Role: a runtime starts the plugin once per pod operation, and a Python process costs
 * more to start than the reference plugins' whole ADD. This program does no CNI work.
 * It sends the request to the agent of its network namespace, on the abstract unix
 * socket "\0bgpnet-agent", in the agent's format (one JSON line):
 *
 *   {"op": "cni", "env": {"CNI_COMMAND": "...", ...}, "stdin": "<config text>"}
 *
 * It prints the agent's reply as the Python plugin (bgpnet/cni/plugin.py) prints it:
 * the "result" object with exit status 0 (nothing for a null result), or the "error"
 * object with exit status 1.
 *
 * Fallback: when no agent listens (connect fails with ECONNREFUSED or ENOENT), and for
 * commands the agent does not run (VERSION, unknown ones), it execs the Python plugin,
 * which handles them itself or does the work directly. The Python plugin is
 * "bgpnet-cni-py" in this binary's directory when that file exists, else the path
 * given at build time in BGPNET_CNI_PYTHON. stdin is read only after connect
 * succeeds, so the Python plugin gets it untouched.
 *
 * Rules: stdout carries one JSON document or nothing. Input is bounded (stdin and the
 * reply), strings are escaped per RFC 8259, and every failure after connect becomes
 * the spec's error object: 11 (try again later) when the agent did not reply, as the
 * Python plugin reports it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef BGPNET_CNI_PYTHON
#define BGPNET_CNI_PYTHON "/opt/cni/bin/bgpnet-cni-py"
#endif

#define CONTROL_NAME "bgpnet-agent"      /* abstract address, without the leading NUL */
#define FALLBACK_NAME "bgpnet-cni-py"
#define MAX_CONFIG_BYTES (1 << 20)       /* the agent rejects longer request lines */
#define MAX_REPLY_BYTES (4 << 20)
#define REPLY_TIMEOUT_SECONDS 60         /* ADDs queue behind each other in the agent */
#define IO_FAILURE 5                     /* CNI spec error codes */
#define INVALID_CONFIG 7
#define TRY_AGAIN_LATER 11
#define AGENT_HINT "retry, and check the agent's log"
#define INTERNAL_ERROR 999               /* the reference plugins' code for other failures */

extern char **environ;

struct buffer {
    char *data;
    size_t length;
    size_t capacity;
};

static int buffer_reserve(struct buffer *buffer, size_t extra)
{
    if (buffer->length + extra + 1 <= buffer->capacity)
        return 0;
    size_t capacity = buffer->capacity ? buffer->capacity : 4096;
    while (capacity < buffer->length + extra + 1)
        capacity *= 2;
    char *data = realloc(buffer->data, capacity);
    if (data == NULL)
        return -1;
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int buffer_append(struct buffer *buffer, const char *text, size_t length)
{
    if (buffer_reserve(buffer, length) != 0)
        return -1;
    memcpy(buffer->data + buffer->length, text, length);
    buffer->length += length;
    buffer->data[buffer->length] = '\0';
    return 0;
}

static int buffer_puts(struct buffer *buffer, const char *text)
{
    return buffer_append(buffer, text, strlen(text));
}

/* Append text as a JSON string literal. Bytes of 0x80 and up pass through, so UTF-8
 * stays as it is; the agent rejects invalid UTF-8 with the spec's decode error. */
static int append_json_string(struct buffer *buffer, const char *text, size_t length)
{
    static const char hex[] = "0123456789abcdef";
    if (buffer_reserve(buffer, 6 * length + 2) != 0)
        return -1;
    char *out = buffer->data + buffer->length;
    *out++ = '"';
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c == '\n') {
            *out++ = '\\';
            *out++ = 'n';
        } else if (c == '\t') {
            *out++ = '\\';
            *out++ = 't';
        } else if (c < 0x20 || c == 0x7f) {
            *out++ = '\\';
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 0xf];
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    buffer->length = (size_t)(out - buffer->data);
    buffer->data[buffer->length] = '\0';
    return 0;
}

/* Print the spec's error object with exit status 1. The version is the newest
 * supported one, because this program does not parse the config. */
static int fail(int code, const char *msg, const char *details)
{
    struct buffer out = {0};
    char number[16];
    snprintf(number, sizeof number, "%d", code);
    if (buffer_puts(&out, "{\"cniVersion\": \"1.1.0\", \"code\": ") != 0 ||
        buffer_puts(&out, number) != 0 || buffer_puts(&out, ", \"msg\": ") != 0 ||
        append_json_string(&out, msg, strlen(msg)) != 0 ||
        buffer_puts(&out, ", \"details\": ") != 0 ||
        append_json_string(&out, details, strlen(details)) != 0 || buffer_puts(&out, "}\n") != 0) {
        fputs("{\"cniVersion\": \"1.1.0\", \"code\": 999, \"msg\": \"out of memory\"}\n", stdout);
        return 1;
    }
    fwrite(out.data, 1, out.length, stdout);
    free(out.data);
    return 1;
}

/* Print the error object with details "<action>: <strerror(errno)>; <hint>". */
static int fail_errno(int code, const char *msg, const char *action, const char *hint)
{
    char details[320];
    snprintf(details, sizeof details, "%s: %s; %s", action, strerror(errno), hint);
    return fail(code, msg, details);
}

/* Replace this process with the Python plugin, which reads the untouched stdin. */
static int exec_python(char **argv)
{
    char own[4096];
    char beside[4096 + sizeof FALLBACK_NAME];
    ssize_t length = readlink("/proc/self/exe", own, sizeof own - 1);
    if (length > 0) {
        own[length] = '\0';
        char *slash = strrchr(own, '/');
        if (slash != NULL) {
            slash[1] = '\0';
            snprintf(beside, sizeof beside, "%s%s", own, FALLBACK_NAME);
            if (access(beside, X_OK) == 0) {
                argv[0] = beside;
                execv(beside, argv);
            }
        }
    }
    argv[0] = (char *)BGPNET_CNI_PYTHON;
    execv(BGPNET_CNI_PYTHON, argv);
    char details[512];
    snprintf(details, sizeof details, "exec %s failed: %s; install the Python plugin as "
             "%s beside this binary, or start the agent", BGPNET_CNI_PYTHON, strerror(errno),
             FALLBACK_NAME);
    return fail(INTERNAL_ERROR, "bgpnet-cni failed", details);
}

static int is_agent_command(const char *command)
{
    static const char *const commands[] = {"ADD", "DEL", "CHECK", "GC", "STATUS"};
    if (command == NULL)
        return 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(command, commands[i]) == 0)
            return 1;
    return 0;
}

/* Return a connected socket, -1 when nothing listens, -2 (errno set) on other errors. */
static int connect_agent(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -2;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    memcpy(address.sun_path + 1, CONTROL_NAME, sizeof CONTROL_NAME - 1);
    socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                   sizeof CONTROL_NAME - 1);
    if (connect(fd, (struct sockaddr *)&address, length) != 0) {
        int error = errno;
        close(fd);
        errno = error;
        return (error == ECONNREFUSED || error == ENOENT) ? -1 : -2;
    }
    struct timeval timeout = {.tv_sec = REPLY_TIMEOUT_SECONDS};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    return fd;
}

/* Read all of stdin; return -1 when it is longer than MAX_CONFIG_BYTES or unreadable. */
static int read_stdin(struct buffer *config)
{
    if (buffer_reserve(config, 0) != 0)
        return -1;
    for (;;) {
        if (buffer_reserve(config, 65536) != 0)
            return -1;
        ssize_t got = read(STDIN_FILENO, config->data + config->length, 65536);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return 0;
        config->length += (size_t)got;
        config->data[config->length] = '\0';
        if (config->length > MAX_CONFIG_BYTES) {
            errno = EFBIG;
            return -1;
        }
    }
}

static int build_request(struct buffer *request, const struct buffer *config)
{
    if (buffer_puts(request, "{\"op\": \"cni\", \"env\": {") != 0)
        return -1;
    int first = 1;
    for (char **variable = environ; *variable != NULL; variable++) {
        if (strncmp(*variable, "CNI_", 4) != 0)
            continue;
        const char *equals = strchr(*variable, '=');
        if (equals == NULL)
            continue;
        if ((!first && buffer_puts(request, ", ") != 0) ||
            append_json_string(request, *variable, (size_t)(equals - *variable)) != 0 ||
            buffer_puts(request, ": ") != 0 ||
            append_json_string(request, equals + 1, strlen(equals + 1)) != 0)
            return -1;
        first = 0;
    }
    if (buffer_puts(request, "}, \"stdin\": ") != 0 ||
        append_json_string(request, config->data, config->length) != 0 ||
        buffer_puts(request, "}\n") != 0)
        return -1;
    return 0;
}

static int send_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0)
            return -1;
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

/* Read one reply line (up to the first newline or EOF). */
static int read_reply(int fd, struct buffer *reply)
{
    for (;;) {
        if (buffer_reserve(reply, 65536) != 0)
            return -1;
        ssize_t got = recv(fd, reply->data + reply->length, 65536, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            return 0;
        reply->length += (size_t)got;
        reply->data[reply->length] = '\0';
        if (memchr(reply->data + reply->length - got, '\n', (size_t)got) != NULL)
            return 0;
        if (reply->length > MAX_REPLY_BYTES) {
            errno = EFBIG;
            return -1;
        }
    }
}

/* A minimal JSON scanner: enough to find top-level members of an object and the
 * extent of their values. It checks structure, not every detail of the grammar, which
 * is enough because the agent's replies come from Python's json.dumps. */

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Return the end of the JSON value starting at p, or NULL when it is malformed. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (p == NULL)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']')
                if (--depth == 0)
                    return p + 1;
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && strchr(",}] \t\r\n", *p) == NULL)
        p++;
    return p > start ? p : NULL;
}

/* Find the member key of the object in [p, end); set *value and *value_end. */
static int find_member(const char *p, const char *end, const char *key, const char **value,
                       const char **value_end)
{
    size_t key_length = strlen(key);
    p = skip_space(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = skip_space(p + 1, end);
    while (p < end && *p == '"') {
        const char *name_end = skip_string(p, end);
        if (name_end == NULL)
            return -1;
        int match = (size_t)(name_end - p) == key_length + 2 &&
                    memcmp(p + 1, key, key_length) == 0;
        p = skip_space(name_end, end);
        if (p >= end || *p != ':')
            return -1;
        p = skip_space(p + 1, end);
        const char *after = skip_value(p, end);
        if (after == NULL)
            return -1;
        if (match) {
            *value = p;
            *value_end = after;
            return 0;
        }
        p = skip_space(after, end);
        if (p < end && *p == ',')
            p = skip_space(p + 1, end);
    }
    return -1;
}

static int is_literal(const char *value, const char *value_end, const char *literal)
{
    size_t length = strlen(literal);
    return (size_t)(value_end - value) == length && memcmp(value, literal, length) == 0;
}

/* Print the result or error of the agent's reply; return the exit status. */
static int print_reply(const struct buffer *reply)
{
    const char *end = reply->data + reply->length;
    const char *ok, *ok_end, *value, *value_end, *code, *code_end;
    if (find_member(reply->data, end, "ok", &ok, &ok_end) == 0) {
        if (is_literal(ok, ok_end, "true")) {
            if (find_member(reply->data, end, "result", &value, &value_end) != 0 ||
                is_literal(value, value_end, "null"))
                return 0;  /* a command that prints nothing */
            fwrite(value, 1, (size_t)(value_end - value), stdout);
            fputc('\n', stdout);
            return 0;
        }
        if (find_member(reply->data, end, "error", &value, &value_end) == 0 &&
            find_member(value, value_end, "code", &code, &code_end) == 0 &&
            *code >= '0' && *code <= '9') {
            fwrite(value, 1, (size_t)(value_end - value), stdout);
            fputc('\n', stdout);
            return 1;
        }
    }
    char details[320];
    snprintf(details, sizeof details, "agent sent a reply without result or error: %.200s; "
             "retry, and check the agent's log", reply->length ? reply->data : "(empty)");
    return fail(TRY_AGAIN_LATER, "the node agent did not complete the request", details);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (!is_agent_command(getenv("CNI_COMMAND")))
        return exec_python(argv);
    int fd = connect_agent();
    if (fd == -1)
        return exec_python(argv);
    if (fd < 0)
        return fail_errno(TRY_AGAIN_LATER, "the node agent did not complete the request",
                          "connect to the agent's control socket failed", AGENT_HINT);

    struct buffer config = {0}, request = {0}, reply = {0};
    int status;
    if (read_stdin(&config) != 0) {
        if (errno == EFBIG)
            status = fail(INVALID_CONFIG, "network config is invalid",
                          "stdin is longer than 1 MiB; shorten the config");
        else
            status = fail_errno(IO_FAILURE, "read the network config failed", "read stdin",
                                "pass the config on stdin");
    } else if (build_request(&request, &config) != 0) {
        status = fail(INTERNAL_ERROR, "bgpnet-cni failed", "out of memory");
    } else if (send_all(fd, request.data, request.length) != 0 || read_reply(fd, &reply) != 0) {
        status = fail_errno(TRY_AGAIN_LATER, "the node agent did not complete the request",
                            "agent did not reply", AGENT_HINT);
    } else {
        status = print_reply(&reply);
    }
    close(fd);
    free(config.data);
    free(request.data);
    free(reply.data);
    if (fflush(stdout) != 0)
        return 1;
    return status;
}
