/* test_store_faults.c — kvtierd's store under faults (issue 9), real
 * processes on loopback, real RocksDB in temp dirs:
 *   a corrupt SST block (bytes flipped in the data dir's .sst files while
 *     kvtierd is down) -> fetch DATA_LOSS (never UNAVAILABLE, never garbage),
 *     checksum_failures counts it, kvtierd stays up;
 *   the index runs out of memory growing for a far block (the index's fault
 *     seam, env KVTIER_TEST_INDEX_ALLOC_FAIL) -> RESOURCE_EXHAUSTED, kvtierd
 *     alive, every stored block intact (this crashed with SIGSEGV). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"

/* ---------------------------------------------------------------- helpers */

#define BLOCK ITEST_BLOCK

/* ---------------------------------------------------------------- tests */

/* Flips a few bytes in the middle of every .sst file of dir larger than
 * min_size (the blocks family: the small meta files stay intact, so the
 * index recovers). Returns the number of files changed. */
static int corrupt_ssts(const char *dir, long min_size) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".sst") != 0)
            continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        if (size > min_size) {
            for (long off = size / 8; off < size * 3 / 4; off += size / 8) {
                uint8_t x[16];
                fseek(f, off, SEEK_SET);
                assert_int_equal(fread(x, 1, sizeof x, f), sizeof x);
                for (size_t i = 0; i < sizeof x; i++)
                    x[i] ^= 0x5a;
                fseek(f, off, SEEK_SET);
                assert_int_equal(fwrite(x, 1, sizeof x, f), sizeof x);
            }
            n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Issue 9: a corrupt SST block was served as UNAVAILABLE (workers retry it)
 * with checksum_failures 0, where the proto promises DATA_LOSS. */
static void test_corrupt_sst(void **state) {
    (void)state;
    itest_server s = {0};
    assert_int_equal(itest_server_start(&s, NULL), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 50;
    const uint32_t L = 2, NBK = 24; /* 3 MiB of payload */
    itest_open_seq(c, seq, L);
    itest_put_range(c, seq, L, 0, NBK);
    kvtier_client_free(c);
    /* Into SST files: a clean stop leaves the blocks in the WAL; the next
     * open flushes what it recovers from the WAL to L0 files. */
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGTERM, 30000, &st), 0);
    assert_int_equal(itest_server_restart(&s), 0);
    assert_int_equal(itest_server_signal(&s, SIGTERM, 30000, &st), 0);
    assert_true(corrupt_ssts(s.dir, 1L << 20) >= 1);
    assert_int_equal(itest_server_restart(&s), 0); /* paranoid checks on, as always */
    c = itest_client(&s, NULL);
    kvtier_error e;
    kvtier_stats before, after;
    assert_int_equal(kvtier_stats_get(c, &before, &e), KVTIER_OK);
    int lost = 0, good = 0;
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = 0; b < NBK; b++) {
            int same = 0;
            kvtier_code code = itest_fetch_one(c, seq, l, b, &same);
            if (code == KVTIER_OK) {
                assert_true(same); /* never garbage */
                good++;
            } else {
                if (code != KVTIER_DATA_LOSS)
                    fprintf(stderr, "fetch (%u,%u): %s\n", l, b, kvtier_code_name(code));
                assert_int_equal(code, KVTIER_DATA_LOSS);
                lost++;
            }
        }
    fprintf(stderr, "corrupt SST: %d blocks DATA_LOSS, %d intact\n", lost, good);
    assert_true(lost >= 1);
    assert_int_equal(kvtier_stats_get(c, &after, &e), KVTIER_OK);
    assert_true(after.checksum_failures >= before.checksum_failures + (uint64_t)lost);
    assert_int_equal(kill(s.pid, 0), 0); /* alive, and answering */
    assert_int_equal(kvtier_stats_get(c, &after, &e), KVTIER_OK);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

/* Issue 9: under an address-space limit the 4th large sequence crashed
 * kvtierd (the cleanup after "out of memory growing the index" wrote into
 * slots that were never grown). The index's fault seam makes its 5th
 * allocation fail (1 init, 2 the sequence, 3-4 the first growth): one of the
 * far puts below meets it. */
static void test_index_oom(void **state) {
    (void)state;
    itest_server s = {0};
    /* index allocations: 1 the sequence hash, 2 the sequence, 3-5 the first
     * put (growth record, chunk table, chunk); 6 the far block's chunk */
    setenv("KVTIER_TEST_INDEX_ALLOC_FAIL", "6", 1);
    int up = itest_server_start(&s, NULL);
    unsetenv("KVTIER_TEST_INDEX_ALLOC_FAIL");
    assert_int_equal(up, 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 40;
    itest_open_seq(c, seq, 8);
    itest_put_range(c, seq, 1, 0, 2); /* layer 0, blocks 0 and 1 */
    uint8_t *buf = malloc(BLOCK);
    kvtier_error e;
    int refused = 0;
    for (uint32_t k = 1; k <= 8 && !refused; k++) {
        uint32_t b = 8000 * k + 1;
        itest_payload(buf, BLOCK, seq, 7, b, 0);
        kvtier_block blk = {7, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
        kvtier_code code = kvtier_put_blocks(c, seq, &blk, 1, NULL, &e);
        if (code != KVTIER_OK) {
            if (code != KVTIER_RESOURCE_EXHAUSTED)
                fprintf(stderr, "put block %u: %s: %s\n", b, kvtier_code_name(code), e.message);
            assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
            assert_non_null(strstr(e.message, "out of memory"));
            int same = 0;
            assert_int_equal(itest_fetch_one(c, seq, 7, b, &same), KVTIER_NOT_FOUND);
            refused = 1;
        }
    }
    assert_true(refused);
    assert_int_equal(kill(s.pid, 0), 0); /* alive */
    for (uint32_t b = 0; b < 2; b++) {
        int same = 0;
        assert_int_equal(itest_fetch_one(c, seq, 0, b, &same), KVTIER_OK);
        assert_true(same);
    }
    itest_put_range(c, seq, 1, 2, 3); /* and still takes puts */
    free(buf);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_oom),
        cmocka_unit_test(test_corrupt_sst),
    };
    return cmocka_run_group_tests_name("store_faults", tests, NULL, NULL);
}
