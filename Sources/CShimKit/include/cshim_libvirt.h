#pragma once
/* libvirt's client library, loaded at run time (dlopen of libvirt.so.0) so
 * vmshim needs libvirt only for interfaces on libvirt networks. Only the
 * calls vmshim makes; pointers are libvirt's opaque objects. */
#include <stddef.h>

typedef struct cshim_libvirt {
    void *(*connect_open)(const char *name);
    int (*connect_close)(void *conn);
    void *(*network_lookup_by_name)(void *conn, const char *name);
    int (*network_is_active)(void *network);
    int (*network_free)(void *network);
    void *(*network_port_create_xml)(void *network, const char *xml, unsigned int flags);
    void *(*network_port_lookup_by_uuid_string)(void *network, const char *uuid);
    char *(*network_port_get_xml_desc)(void *port, unsigned int flags);
    int (*network_port_delete)(void *port, unsigned int flags);
    int (*network_port_free)(void *port);
    int (*network_list_all_ports)(void *network, void ***ports, unsigned int flags);
    const char *(*last_error_message)(void);
} cshim_libvirt;

/* Fills `api` from libvirt.so.0 and silences libvirt's default error printer
 * (vmshim reports errors itself). 0, or -1 with the reason in `error`. */
int cshim_libvirt_load(cshim_libvirt *api, char *error, size_t size);
/* free(3) for strings and arrays libvirt returns. */
void cshim_libvirt_free(void *pointer);
