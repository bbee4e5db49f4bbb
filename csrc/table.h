/*
 * The first two words of every shared table file (memifx/table.pyx): what
 * the file is and how big its writer made it.  A table's own header
 * (fib_header_t, nbr_header_t) starts with these two fields, so a reader
 * checks them the same way for every table before it trusts the rest.
 */
#ifndef MEMIFX_TABLE_H
#define MEMIFX_TABLE_H

#include <stdint.h>

typedef struct {
    uint64_t magic;         /* the table kind, 8 ASCII bytes read little-endian */
    uint64_t size;          /* bytes of the whole file */
} table_header_t;

#endif
