/* test_chat.c — chat template rendering and detection (expected strings are
 * what the Qwen3 Jinja templates produce for the same messages). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "chat.h"

static void render_is(chat_format_t fmt, const chat_msg *m, size_t n, int gen, int think,
                      const char *want) {
    char *s = chat_render(fmt, m, n, gen, think);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

static void test_one_user_turn(void **state) {
    (void)state;
    chat_msg m[] = {{"user", "Hello"}};
    render_is(CHAT_QWEN3, m, 1, 1, 1, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    render_is(CHAT_QWEN3, m, 1, 1, 0,
              "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    render_is(CHAT_QWEN3_THINKING, m, 1, 1, 0,
              "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n");
    render_is(CHAT_CHATML, m, 1, 1, 0,
              "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    render_is(CHAT_QWEN3, m, 1, 0, 0, "<|im_start|>user\nHello<|im_end|>\n");
}

static void test_system_first(void **state) {
    (void)state;
    chat_msg m[] = {{"system", "Be brief."}, {"user", "Hi"}};
    render_is(CHAT_QWEN3, m, 2, 1, 1,
              "<|im_start|>system\nBe "
              "brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

static void test_history_drops_old_reasoning(void **state) {
    (void)state;
    /* an assistant turn before the last user query loses its <think> part */
    chat_msg m[] = {
        {"user", "1+1?"}, {"assistant", "<think>\nadd them\n</think>\n\n2"}, {"user", "and 2+2?"}};
    render_is(CHAT_QWEN3, m, 3, 1, 1,
              "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
              "<|im_start|>user\nand 2+2?<|im_end|>\n<|im_start|>assistant\n");
}

static void test_last_assistant_keeps_reasoning(void **state) {
    (void)state;
    chat_msg m[] = {{"user", "q"}, {"assistant", "<think>\n\nstep\n\n</think>\n\nanswer"}};
    render_is(CHAT_QWEN3, m, 2, 0, 1,
              "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nstep\n</"
              "think>\n\nanswer<|im_end|>\n");
    /* the last assistant turn without reasoning still gets an (empty) think block */
    chat_msg m2[] = {{"user", "q"}, {"assistant", "answer"}};
    render_is(CHAT_QWEN3, m2, 2, 0, 1,
              "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</"
              "think>\n\nanswer<|im_end|>\n");
    /* ChatML keeps assistant content as is */
    render_is(CHAT_CHATML, m, 2, 0, 1,
              "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\nstep\n\n</"
              "think>\n\nanswer<|im_end|>\n");
}

static void test_tool_turns(void **state) {
    (void)state;
    chat_msg m[] = {
        {"user", "weather?"}, {"assistant", "calling"}, {"tool", "sunny"}, {"tool", "22C"}};
    /* consecutive tool messages share one user turn; the tool turn is not a query,
     * so "weather?" is the last query; the assistant turn after it is not the last
     * message and has no reasoning, so it gets no think block */
    render_is(CHAT_QWEN3, m, 4, 1, 1,
              "<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\ncalling<|im_end|>\n"
              "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n22C\n</"
              "tool_response>"
              "<|im_end|>\n<|im_start|>assistant\n");
}

static void test_bad_input(void **state) {
    (void)state;
    chat_msg bad_role[] = {{"wizard", "x"}};
    assert_null(chat_render(CHAT_QWEN3, bad_role, 1, 1, 1));
    chat_msg null_content[] = {{"user", NULL}};
    assert_null(chat_render(CHAT_QWEN3, null_content, 1, 1, 1));
    chat_msg ok[] = {{"user", "x"}};
    assert_null(chat_render(CHAT_FORMAT_ERROR, ok, 1, 1, 1));
    char *s = chat_render(CHAT_QWEN3, NULL, 0, 1, 1);
    assert_string_equal(s, "<|im_start|>assistant\n");
    free(s);
}

static void test_detect_template(void **state) {
    (void)state;
    assert_int_equal(chat_detect_template("{%- if enable_thinking is defined %}<|im_start|>"),
                     CHAT_QWEN3);
    assert_int_equal(chat_detect_template("{{- '<|im_start|>assistant\\n<think>\\n' }}"),
                     CHAT_QWEN3_THINKING);
    assert_int_equal(chat_detect_template("{{- '<|im_start|>assistant\\n' }}"), CHAT_CHATML);
    assert_int_equal(chat_detect_template("{{ bos_token }}[INST]"), CHAT_FORMAT_ERROR);
    assert_int_equal(chat_detect_template(NULL), CHAT_FORMAT_ERROR);
}

static chat_format_t detect_json(const char *json, char *err, size_t errlen) {
    char dir[] = "/tmp/kvtier_chat_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    chat_format_t fmt = chat_detect_file(path, err, errlen);
    unlink(path);
    rmdir(dir);
    return fmt;
}

static void test_detect_file(void **state) {
    (void)state;
    char err[512] = "";
    assert_int_equal(
        detect_json("{\"chat_template\": \"{{ '<|im_start|>assistant\\\\n<think>\\\\n' }}\"}", err,
                    sizeof err),
        CHAT_QWEN3_THINKING);
    assert_int_equal(detect_json("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": "
                                 "\"x\"}, {\"name\": \"default\", "
                                 "\"template\": \"enable_thinking <|im_start|>\"}]}",
                                 err, sizeof err),
                     CHAT_QWEN3);
    assert_int_equal(detect_json("{\"eos_token\": \"x\"}", err, sizeof err), CHAT_FORMAT_ERROR);
    assert_non_null(strstr(err, "no usable chat_template"));
    assert_int_equal(detect_json("{\"chat_template\": ", err, sizeof err), CHAT_FORMAT_ERROR);
    assert_non_null(strstr(err, "invalid JSON"));
    assert_int_equal(chat_detect("/nonexistent/tokenizer_config.json"), CHAT_FORMAT_ERROR);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_user_turn),
        cmocka_unit_test(test_system_first),
        cmocka_unit_test(test_history_drops_old_reasoning),
        cmocka_unit_test(test_last_assistant_keeps_reasoning),
        cmocka_unit_test(test_tool_turns),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_detect_template),
        cmocka_unit_test(test_detect_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
