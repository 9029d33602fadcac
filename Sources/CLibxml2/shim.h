#pragma once
#include <libxml/xmlversion.h>
/* Debian builds libxml2 with ICU, so <libxml/encoding.h> would pull in the
   system's <unicode/ucnv.h>, whose UErrorCode clashes with the one in
   Foundation's own ICU module ("has different definitions in different
   modules") in any file that sees both. vmshim only uses libxml2 through
   pointers and never touches the ICU members of its encoding structures, so
   the headers are read without ICU. */
#undef LIBXML_ICU_ENABLED
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/relaxng.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlmemory.h>

/* xmlFree is a mutable C global, which Swift 6 refuses to touch. */
static inline void cxml_free(void *p) { xmlFree(p); }
