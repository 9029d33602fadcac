#include "cshim_libvirt.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void silent(void *data, void *error) {
    (void)data;
    (void)error;
}

int cshim_libvirt_load(cshim_libvirt *api, char *error, size_t size) {
    void *handle = dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(error, size, "%s", dlerror());
        return -1;
    }
    struct {
        const char *name;
        void **slot;
    } symbols[] = {
        {"virConnectOpen", (void **)&api->connect_open},
        {"virConnectClose", (void **)&api->connect_close},
        {"virNetworkLookupByName", (void **)&api->network_lookup_by_name},
        {"virNetworkIsActive", (void **)&api->network_is_active},
        {"virNetworkFree", (void **)&api->network_free},
        {"virNetworkPortCreateXML", (void **)&api->network_port_create_xml},
        {"virNetworkPortLookupByUUIDString", (void **)&api->network_port_lookup_by_uuid_string},
        {"virNetworkPortGetXMLDesc", (void **)&api->network_port_get_xml_desc},
        {"virNetworkPortDelete", (void **)&api->network_port_delete},
        {"virNetworkPortFree", (void **)&api->network_port_free},
        {"virNetworkListAllPorts", (void **)&api->network_list_all_ports},
        {"virGetLastErrorMessage", (void **)&api->last_error_message},
    };
    for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); i++) {
        *symbols[i].slot = dlsym(handle, symbols[i].name);
        if (!*symbols[i].slot) {
            snprintf(error, size, "libvirt.so.0 has no %s (libvirt 5.5 or later is needed)", symbols[i].name);
            dlclose(handle);
            return -1;
        }
    }
    void (*set_error_func)(void *, void (*)(void *, void *)) =
        (void (*)(void *, void (*)(void *, void *)))dlsym(handle, "virSetErrorFunc");
    if (set_error_func) set_error_func(NULL, silent);
    return 0;
}

void cshim_libvirt_free(void *pointer) { free(pointer); }
