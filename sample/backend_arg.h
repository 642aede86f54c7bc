/*
 * backend_arg.h - the proxies' "--backend HOST:PORT" (header only).  HOST
 * is a name, an IPv4 address or a bracketed IPv6 one ([::1]:6379).
 */
#ifndef BACKEND_ARG_H
#define BACKEND_ARG_H

#include <stddef.h>
#include <string.h>

/* Splits s at its last ':' into host (without the brackets; n bytes of
 * room) and *port.  NULL when it did, else what is wrong, in words. */
static inline const char *backend_split(const char *s, char *host, size_t n, const char **port)
{
    const char *colon = s != NULL ? strrchr(s, ':') : NULL;
    if (colon == NULL || colon == s || colon[1] == '\0')
        return "--backend must be HOST:PORT";
    size_t hl = (size_t)(colon - s);
    if (hl >= n)
        return "--backend host is too long";
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    *port = colon + 1;
    return NULL;
}

#endif
