/* chat.h — Qwen3 chat templates rendered in C (no Jinja): the hybrid Qwen3
 * template (enable_thinking), the Thinking-2507 template (always opens <think>)
 * and plain ChatML (Instruct-2507). Tools are not supported. */
#ifndef KVTIER_CHAT_H
#define KVTIER_CHAT_H

#include <stddef.h>

typedef enum {
    CHAT_FORMAT_ERROR = -1,  /* unreadable config or unknown template */
    CHAT_QWEN3 = 0,          /* hybrid Qwen3: enable_thinking=false adds an empty think block */
    CHAT_QWEN3_THINKING = 1, /* Qwen3-*-Thinking-2507: generation prompt ends "<think>\n" */
    CHAT_CHATML = 2,         /* plain ChatML (Qwen3-*-Instruct-2507): no think handling */
} chat_format_t;

/* One message; both strings borrowed. role: "system", "user", "assistant", "tool". */
typedef struct {
    const char *role;
    const char *content;
} chat_msg;

/* Detects the format from tokenizer_config.json's "chat_template" (a string, or
 * a list of {name, template} where "default" is used; if the key is absent, a
 * chat_template.jinja next to the file is read). Returns CHAT_FORMAT_ERROR if
 * the file cannot be read or the template is none of the known forms. */
chat_format_t chat_detect(const char *tokenizer_config_path);

/* Same, with a reason written to err on CHAT_FORMAT_ERROR. */
chat_format_t chat_detect_file(const char *tokenizer_config_path, char *err, size_t errlen);

/* Classifies template text: "enable_thinking" -> CHAT_QWEN3; a generation prompt
 * '<|im_start|>assistant\n<think>\n' -> CHAT_QWEN3_THINKING; other "<|im_start|>"
 * templates -> CHAT_CHATML; else CHAT_FORMAT_ERROR. Pure. */
chat_format_t chat_detect_template(const char *chat_template);

/* Renders messages the way the model's Jinja template does (system turn only
 * where a message has role system; for assistant turns after the last user
 * query the <think> part of the content is kept, earlier ones drop it).
 * add_generation_prompt appends "<|im_start|>assistant\n" (+ "<think>\n" for
 * CHAT_QWEN3_THINKING, + "<think>\n\n</think>\n\n" for CHAT_QWEN3 when
 * enable_thinking == 0). Returns a malloc'd string (caller frees), or NULL on
 * an unknown role, a NULL field, a bad format or OOM. */
char *chat_render(chat_format_t fmt, const chat_msg *msgs, size_t n, int add_generation_prompt,
                  int enable_thinking);

#endif
