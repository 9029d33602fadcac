#pragma once
/* macvtap links for <interface type='direct'>, made over rtnetlink as
 * libvirt makes them. */

/* Creates macvtap link `name` on the link with index `lower`, in macvlan
 * `mode` (1 private, 2 vepa, 4 bridge, 8 passthru), with MAC `mac` (6
 * bytes). 0, or -1 with errno (EEXIST: the name is taken). */
int cshim_macvtap_create(const char *name, int lower, unsigned int mode, const unsigned char *mac);
/* Deletes link `name`; 0, or -1 with errno. */
int cshim_link_delete(const char *name);
/* Opens the character device of macvtap link `name` (/dev/tapIFINDEX,
 * made from sysfs when nothing created it), with IFF_VNET_HDR when asked.
 * The fd, or -1 with errno. */
int cshim_macvtap_open(const char *name, int vnet_hdr);
