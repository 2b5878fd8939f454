/* json.h - what the project adds to jansson (the one JSON library; see DESIGN.md). */
#ifndef KD_JSON_H
#define KD_JSON_H

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The kind of a JSON value with its article, for messages:
 * "an object", "an array", "a string", "an integer", "a number", "a boolean",
 * "null". Static storage. */
const char *kd_json_type_name(const json_t *v);

#ifdef __cplusplus
}
#endif
#endif
