#pragma once
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/relaxng.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlmemory.h>

/* xmlFree is a mutable C global, which Swift 6 refuses to touch. */
static inline void cxml_free(void *p) { xmlFree(p); }
