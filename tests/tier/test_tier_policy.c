/* Placement policy: each rule, protected blocks, revivals, budgets. Pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "policy.h"

#define NL 2
#define NB 12

typedef struct fix {
    policy_params p;
    policy_chunk ch[NL];  /* layer l: blocks [0, 64) */
    policy_chunk *tab[8]; /* the state's chunk table */
    policy_state st;
    policy_decision out[NL * 16];
    void *scratch;
} fix;

static void fix_init(fix *f, uint64_t step) {
    memset(f, 0, sizeof *f);
    policy_params_init(&f->p);
    f->p.prefetch_min_revivals = 0;
    f->st = (policy_state){f->tab, 8, 0, NL, NB, step};
    for (uint32_t l = 0; l < NL; l++) {
        f->ch[l].layer = l;
        assert_int_equal(policy_chunk_insert(&f->st, &f->ch[l]), 0);
    }
    for (int l = 0; l < NL; l++)
        for (int b = 0; b < NB; b++) {
            policy_block *x = &f->ch[l].blocks[b];
            x->tier = TIER_HOT;
            x->last_active = step;
            x->bytes = 1000;
        }
}

static policy_block *blk(fix *f, uint32_t l, uint32_t b) {
    return &f->ch[l].blocks[b];
}

static size_t decide(fix *f) {
    free(f->scratch);
    f->scratch = malloc(policy_scratch_size(&f->st));
    return policy_decide(&f->p, &f->st, f->out, NL * NB, f->scratch);
}

static const policy_decision *find(fix *f, size_t n, uint32_t l, uint32_t b) {
    for (size_t i = 0; i < n; i++)
        if (f->out[i].layer == l && f->out[i].block == b)
            return &f->out[i];
    return NULL;
}

static void test_defaults(void **st) {
    (void)st;
    policy_params p;
    policy_params_init(&p);
    assert_true(p.top_p == 0.95);
    assert_int_equal(p.hot_inactive_steps, 50);
    assert_int_equal(p.recent_blocks, 4);
    assert_int_equal(p.sink_blocks, 1);
    char err[100];
    assert_int_equal(policy_params_check(&p, err, sizeof err), 0);
    p.top_p = 1.5;
    assert_int_equal(policy_params_check(&p, err, sizeof err), -1);
    assert_non_null(strstr(err, "top_p"));
    policy_params_init(&p);
    p.n_layer_budgets = POLICY_MAX_LAYERS + 1;
    assert_int_equal(policy_params_check(&p, err, sizeof err), -1);
    assert_string_equal(policy_kind_name(POLICY_DEMOTE_SSD), "DEMOTE_SSD");
    assert_string_equal(policy_tier_name(TIER_DROPPED), "DROPPED");
}

static void test_protected(void **st) {
    (void)st;
    policy_params p;
    policy_params_init(&p);
    assert_true(policy_is_protected(&p, 12, 0)); /* sink */
    assert_false(policy_is_protected(&p, 12, 1));
    assert_false(policy_is_protected(&p, 12, 7));
    assert_true(policy_is_protected(&p, 12, 8)); /* last 4: 8..11 */
    assert_true(policy_is_protected(&p, 12, 11));
    assert_true(policy_is_protected(&p, 3, 2));
}

/* The hot pool is the worker's: policy_decide never moves a HOT block,
 * however stale or over its layer's budget. */
static void test_decide_leaves_hot_alone(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 1000);
    f.st.step = 1000;
    f.p.n_layer_budgets = 2;
    f.p.layer_hot_budget[0] = 2;
    f.p.layer_hot_budget[1] = 2;
    for (int l = 0; l < NL; l++)
        for (int b = 0; b < NB; b++)
            blk(&f, l, b)->last_active = 0; /* all stale */
    assert_int_equal(decide(&f), 0);
    free(f.scratch);
}

/* What the worker uses instead: expiry after T_hot inactive steps (exactly
 * T_hot stays) and the one ranking (older first, then less mass). */
static void test_hot_expired_and_ranking(void **st) {
    (void)st;
    policy_params p;
    policy_params_init(&p);
    policy_hot_key k = {150, 0.0f};
    assert_false(policy_hot_expired(&p, 200, &k)); /* exactly 50 */
    k.last_active = 149;
    assert_true(policy_hot_expired(&p, 200, &k)); /* 51 */
    k.last_active = 300;
    assert_false(policy_hot_expired(&p, 200, &k)); /* active "after" now: not expired */
    policy_hot_key old = {10, 5.0f}, young = {20, 0.0f}, light = {20, 0.5f}, heavy = {20, 2.0f};
    assert_true(policy_hot_colder(&old, &young));
    assert_false(policy_hot_colder(&young, &old));
    assert_true(policy_hot_colder(&light, &heavy)); /* same step: less mass leaves first */
    assert_false(policy_hot_colder(&heavy, &light));
    assert_false(policy_hot_colder(&light, &light)); /* strict */
}

/* rule 1: host budget -> coldest by age / (1 + revivals) go to SSD */
static void test_host_budget_revivals(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 1000);
    /* layer 0 blocks 1..4 in HOST, 1000 bytes each; budget 2500 -> 2 must go */
    f.p.host_budget_bytes = 2500;
    for (uint32_t b = 1; b <= 4; b++)
        blk(&f, 0, b)->tier = TIER_HOST;
    blk(&f, 0, 1)->last_active = 100; /* age 900, revived 3x -> eff 225 */
    blk(&f, 0, 1)->revivals = 3;
    blk(&f, 0, 2)->last_active = 500; /* age 500 -> eff 500 */
    blk(&f, 0, 3)->last_active = 700; /* age 300 -> eff 300 */
    blk(&f, 0, 4)->last_active = 900; /* age 100 */
    size_t n = decide(&f);
    assert_int_equal(n, 2);
    assert_int_equal(find(&f, n, 0, 2)->kind, POLICY_DEMOTE_SSD);
    assert_int_equal(find(&f, n, 0, 3)->kind, POLICY_DEMOTE_SSD);
    assert_null(find(&f, n, 0, 1)); /* revived: stays despite being oldest */
    /* without the revivals it would have gone first */
    blk(&f, 0, 1)->revivals = 0;
    n = decide(&f);
    assert_non_null(find(&f, n, 0, 1));
    assert_non_null(find(&f, n, 0, 2));
    assert_null(find(&f, n, 0, 3));
    /* under budget: nothing */
    f.p.host_budget_bytes = 4000;
    assert_int_equal(decide(&f), 0);
    free(f.scratch);
}

/* rule 2: SSD budget -> DROP never-revived oldest first */
static void test_ssd_budget_drops(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 1000);
    f.p.ssd_budget_bytes = 2000;
    for (uint32_t b = 1; b <= 5; b++) {
        blk(&f, 1, b)->tier = TIER_SSD;
        blk(&f, 1, b)->last_active = 900 + b;
    }
    blk(&f, 1, 1)->revivals = 1; /* oldest but revived: last to drop */
    size_t n = decide(&f);
    assert_int_equal(n, 3);
    for (uint32_t b = 2; b <= 4; b++) {
        const policy_decision *d = find(&f, n, 1, b);
        assert_non_null(d);
        assert_int_equal(d->kind, POLICY_DROP);
        assert_int_equal(d->from, TIER_SSD);
        assert_int_equal(d->to, TIER_DROPPED);
    }
    assert_null(find(&f, n, 1, 1));
    assert_null(find(&f, n, 1, 5));
    free(f.scratch);
}

/* rule 1 feeding rule 2: blocks pushed to SSD count against its budget;
 * each block at most one decision */
static void test_host_to_ssd_pressure(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 1000);
    f.p.host_budget_bytes = 1000;
    f.p.ssd_budget_bytes = 1000;
    blk(&f, 0, 1)->tier = TIER_HOST;
    blk(&f, 0, 1)->last_active = 10;
    blk(&f, 0, 2)->tier = TIER_HOST;
    blk(&f, 0, 2)->last_active = 990;
    blk(&f, 0, 3)->tier = TIER_SSD;
    blk(&f, 0, 3)->last_active = 500;
    size_t n = decide(&f);
    assert_int_equal(n, 2);
    assert_int_equal(find(&f, n, 0, 1)->kind, POLICY_DEMOTE_SSD);
    assert_int_equal(find(&f, n, 0, 3)->kind, POLICY_DROP);
    assert_null(find(&f, n, 0, 2));
    free(f.scratch);
}

/* rule 3: prefetch revived SSD blocks while the host budget allows */
static void test_prefetch(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 100);
    f.p.prefetch_min_revivals = 2;
    f.p.host_budget_bytes = 1500;
    blk(&f, 0, 2)->tier = TIER_SSD;
    blk(&f, 0, 2)->revivals = 2;
    blk(&f, 0, 3)->tier = TIER_SSD;
    blk(&f, 0, 3)->revivals = 1; /* below threshold */
    blk(&f, 0, 4)->tier = TIER_SSD;
    blk(&f, 0, 4)->revivals = 5; /* would exceed the host budget */
    size_t n = decide(&f);
    assert_int_equal(n, 1);
    const policy_decision *d = find(&f, n, 0, 2);
    assert_int_equal(d->kind, POLICY_PREFETCH);
    assert_int_equal(d->to, TIER_HOST);
    f.p.prefetch_min_revivals = 0; /* off */
    assert_int_equal(decide(&f), 0);
    free(f.scratch);
}

static void test_apply_summary(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 0);
    blk(&f, 0, 5)->tier = TIER_SSD;
    blk(&f, 1, 6)->tier = TIER_HOST;
    uint32_t act0[] = {2, 3};
    float mass0[] = {0.5f, 0.25f};
    uint32_t rec0[] = {5};
    uint32_t rec1[] = {6};
    uint32_t drop1[] = {7};
    policy_layer_summary ls[2] = {
        {.layer = 0,
         .active = act0,
         .peak_mass = mass0,
         .n_active = 2,
         .recalled = rec0,
         .n_recalled = 1},
        {.layer = 1, .recalled = rec1, .n_recalled = 1, .dropped = drop1, .n_dropped = 1},
    };
    policy_summary s = {.step = 64, .layers = ls, .n_layers = 2};
    char err[160];
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 2);
    assert_int_equal(f.st.step, 64);
    assert_int_equal(blk(&f, 0, 2)->last_active, 64);
    assert_int_equal(blk(&f, 0, 2)->hits, 1);
    assert_int_equal(blk(&f, 0, 5)->tier, TIER_HOT);
    assert_int_equal(blk(&f, 0, 5)->revivals, 1);
    assert_int_equal(blk(&f, 0, 5)->last_active, 64);
    assert_int_equal(blk(&f, 1, 6)->tier, TIER_HOT);
    assert_int_equal(blk(&f, 1, 7)->tier, TIER_DROPPED);
    assert_int_equal(blk(&f, 0, 4)->last_active, 0);
    /* an unknown block reported active is HOT (service restarted, worker kept it) */
    blk(&f, 0, 3)->tier = TIER_NONE;
    blk(&f, 0, 9)->tier = TIER_NONE;
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 0);
    assert_int_equal(blk(&f, 0, 3)->tier, TIER_HOT);
    assert_int_equal(blk(&f, 0, 9)->tier, TIER_NONE);
    /* recalling a block that is already HOT is not a revival */
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 0);
    assert_int_equal(blk(&f, 0, 2)->hits, 3);
    /* step never goes back */
    s.step = 10;
    policy_apply_summary(&f.st, &s, err, sizeof err);
    assert_int_equal(f.st.step, 64);
    assert_int_equal(blk(&f, 0, 2)->last_active, 64);
}

/* a block fetched back and demoted again within the window: +1 revival, the
 * tier it has on the service stays; HOT or unknown blocks learn nothing */
static void test_apply_summary_revived(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 0);
    blk(&f, 0, 4)->tier = TIER_HOST;
    blk(&f, 0, 5)->tier = TIER_SSD;
    blk(&f, 1, 2)->tier = TIER_HOT;
    uint32_t rev0[] = {4, 5}, rev1[] = {2};
    policy_layer_summary ls[2] = {
        {.layer = 0, .revived = rev0, .n_revived = 2},
        {.layer = 1, .revived = rev1, .n_revived = 1},
    };
    policy_summary s = {.step = 80, .layers = ls, .n_layers = 2};
    char err[160];
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 2);
    assert_int_equal(blk(&f, 0, 4)->tier, TIER_HOST);
    assert_int_equal(blk(&f, 0, 4)->revivals, 1);
    assert_int_equal(blk(&f, 0, 4)->last_active, 80);
    assert_int_equal(blk(&f, 0, 5)->tier, TIER_SSD);
    assert_int_equal(blk(&f, 0, 5)->revivals, 1);
    assert_int_equal(blk(&f, 1, 2)->revivals, 0);
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 2); /* each window counts */
    assert_int_equal(blk(&f, 0, 5)->revivals, 2);
    uint32_t bad[] = {NB};
    ls[1].revived = bad;
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "revived"));
    assert_int_equal(blk(&f, 0, 5)->revivals, 2); /* nothing applied */
}

static void test_apply_summary_rejects(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 0);
    uint32_t good[] = {1}, badb[] = {NB};
    policy_layer_summary ls[2] = {
        {.layer = 0, .active = good, .n_active = 1},
        {.layer = 1, .recalled = badb, .n_recalled = 1},
    };
    policy_summary s = {.step = 99, .layers = ls, .n_layers = 2};
    char err[160];
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "out of range"));
    assert_int_equal(blk(&f, 0, 1)->hits, 0); /* nothing applied */
    assert_int_equal(f.st.step, 0);
    ls[1].recalled = good;
    ls[1].layer = NL;
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "layer"));
}

/* whole cycle: summaries over time; the worker's expiry (policy_hot_expired on
 * the same last activity) demotes an idle block, which the service then
 * holds without touching it; a recall revives it */
static void test_cycle(void **st) {
    (void)st;
    fix f;
    fix_init(&f, 0);
    policy_layer_summary ls[NL] = {{.layer = 0}, {.layer = 1}};
    policy_summary s = {.layers = ls, .n_layers = NL};
    char err[100];
    size_t n = 0;
    uint32_t rest[NB]; /* everything but block 3 is active */
    for (uint64_t step = 16; step <= 128; step += 16) {
        int k = 0;
        for (int b = 0; b < NB; b++)
            if (b != 3)
                rest[k++] = (uint32_t)b;
        ls[0].active = rest;
        ls[0].n_active = (uint32_t)k;
        ls[1].active = rest;
        ls[1].n_active = (uint32_t)k;
        s.step = step;
        assert_true(policy_apply_summary(&f.st, &s, err, sizeof err) >= 0);
        n = decide(&f);
        assert_int_equal(n, 0); /* no budget pressure: the service moves nothing */
        int expired = 0;
        for (uint32_t l = 0; l < NL; l++)
            for (uint32_t b = 0; b < NB; b++) {
                policy_block *x = blk(&f, l, b);
                policy_hot_key k = {(int32_t)x->last_active, 0.0f};
                if (x->tier == TIER_HOT && !policy_is_protected(&f.p, NB, b) &&
                    policy_hot_expired(&f.p, (int64_t)step, &k)) {
                    x->tier = TIER_HOST; /* the worker put it */
                    expired++;
                }
            }
        if (step <= 48)
            assert_int_equal(expired, 0);
        if (step == 64)
            assert_int_equal(expired, 2); /* block 3 of both layers: 64 > 50 */
    }
    assert_int_equal(blk(&f, 0, 3)->tier, TIER_HOST);
    uint32_t rec[] = {3};
    ls[0].recalled = rec;
    ls[0].n_recalled = 1;
    s.step = 144;
    assert_int_equal(policy_apply_summary(&f.st, &s, err, sizeof err), 1);
    assert_int_equal(blk(&f, 0, 3)->tier, TIER_HOT);
    assert_int_equal(blk(&f, 0, 3)->revivals, 1);
    policy_decision bad = {POLICY_DROP, TIER_HOT, TIER_DROPPED, NL, 0};
    assert_int_equal(policy_apply_decision(&f.st, &bad), -1);
    free(f.scratch);
}

static void test_empty_state(void **st) {
    (void)st;
    policy_params p;
    policy_params_init(&p);
    policy_state s = {NULL, 0, 0, 4, 0, 0};
    policy_decision out[1];
    char scratch[8];
    assert_int_equal(policy_scratch_size(&s), 0);
    assert_int_equal(policy_decide(&p, &s, out, 1, scratch), 0);
}

/* A sparse state: blocks in no chunk are not stored. A summary must not
 * name them; decisions address stored blocks by their real (layer, block),
 * far ones included, ties in (layer, block) order. */
static void test_sparse_state(void **state) {
    (void)state;
    policy_params p;
    policy_params_init(&p);
    p.prefetch_min_revivals = 0;
    p.ssd_budget_bytes = 1500;
    policy_chunk far = {.layer = 3, .first = 65536 - POLICY_CHUNK_BLOCKS};
    policy_chunk near = {.layer = 0, .first = 0};
    policy_chunk *tab[16] = {0};
    policy_state st = {tab, 16, 0, 256, 65536, 100};
    assert_int_equal(policy_chunk_insert(&st, &far), 0);
    assert_int_equal(policy_chunk_insert(&st, &near), 0);
    for (int i = 0; i < POLICY_CHUNK_BLOCKS; i++)
        near.blocks[i].tier = far.blocks[i].tier = TIER_HOT;
    far.blocks[POLICY_CHUNK_BLOCKS - 1] = (policy_block){TIER_SSD, 1000, 50, 0, 0};
    near.blocks[5] = (policy_block){TIER_SSD, 1000, 50, 0, 0}; /* same rank: (0, 5) first */
    assert_ptr_equal(policy_block_at(&st, 3, 65535), &far.blocks[POLICY_CHUNK_BLOCKS - 1]);
    assert_null(policy_block_at(&st, 3, 0));
    assert_null(policy_block_at(&st, 2, 65535));
    void *scratch = malloc(policy_scratch_size(&st));
    policy_decision out[2 * POLICY_CHUNK_BLOCKS];
    size_t n = policy_decide(&p, &st, out, 2 * POLICY_CHUNK_BLOCKS, scratch);
    assert_int_equal(n, 1); /* 2000 bytes on SSD, budget 1500: one drop */
    assert_int_equal(out[0].kind, POLICY_DROP);
    assert_int_equal(out[0].layer, 0);
    assert_int_equal(out[0].block, 5);
    far.blocks[POLICY_CHUNK_BLOCKS - 1].last_active = 10; /* now the older one */
    n = policy_decide(&p, &st, out, 2 * POLICY_CHUNK_BLOCKS, scratch);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].layer, 3);
    assert_int_equal(out[0].block, 65535);
    assert_int_equal(policy_apply_decision(&st, &out[0]), 0);
    assert_int_equal(far.blocks[POLICY_CHUNK_BLOCKS - 1].tier, TIER_DROPPED);
    policy_decision unstored = {POLICY_DROP, TIER_HOT, TIER_DROPPED, 1, 7};
    assert_int_equal(policy_apply_decision(&st, &unstored), -1);
    uint32_t act[] = {100}; /* in range, not stored */
    policy_layer_summary ls = {.layer = 3, .active = act, .n_active = 1};
    policy_summary s = {.step = 120, .layers = &ls, .n_layers = 1};
    char err[160];
    assert_int_equal(policy_summary_check(&st, &s, err, sizeof err), 0);
    assert_int_equal(policy_apply_summary(&st, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "not stored"));
    assert_int_equal(st.step, 100); /* unchanged */
    act[0] = 65535;
    assert_int_equal(policy_apply_summary(&st, &s, err, sizeof err), 0);
    assert_int_equal(far.blocks[POLICY_CHUNK_BLOCKS - 1].hits, 1);
    assert_int_equal(st.step, 120);
    free(scratch);
}

/* Hot budgets split by need: floors, proportional shares, caps, the total. */
static void test_layer_budgets(void **state) {
    (void)state;
    int out[6];
    double need[6] = {1, 1, 1, 1, 1, 45};
    assert_int_equal(policy_layer_budgets(need, NULL, 6, 102, 6, out), 0);
    int sum = 0;
    for (int l = 0; l < 6; l++) {
        assert_true(out[l] >= 6);
        sum += out[l];
    }
    assert_int_equal(sum, 102);
    assert_true(out[5] >= 6 + 60); /* most of the 72 spare blocks */
    assert_true(out[0] <= 8);
    /* caps: layer 5 holds only 40 blocks, the rest goes to the others */
    int cap[6] = {85, 85, 85, 85, 85, 40};
    assert_int_equal(policy_layer_budgets(need, cap, 6, 102, 6, out), 0);
    sum = 0;
    for (int l = 0; l < 6; l++)
        sum += out[l];
    assert_int_equal(out[5], 40);
    assert_int_equal(sum, 102);
    /* no need measured: an even split */
    double zero[4] = {0, 0, 0, 0};
    assert_int_equal(policy_layer_budgets(zero, NULL, 4, 40, 6, out), 0);
    for (int l = 0; l < 4; l++)
        assert_int_equal(out[l], 10);
    /* total below the floors: floors */
    assert_int_equal(policy_layer_budgets(need, NULL, 6, 10, 6, out), 0);
    for (int l = 0; l < 6; l++)
        assert_int_equal(out[l], 6);
    assert_int_equal(policy_layer_budgets(need, NULL, 0, 10, 6, out), -1);
    assert_int_equal(policy_layer_budgets(NULL, NULL, 6, 10, 6, out), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_protected),
        cmocka_unit_test(test_decide_leaves_hot_alone),
        cmocka_unit_test(test_hot_expired_and_ranking),
        cmocka_unit_test(test_host_budget_revivals),
        cmocka_unit_test(test_ssd_budget_drops),
        cmocka_unit_test(test_host_to_ssd_pressure),
        cmocka_unit_test(test_prefetch),
        cmocka_unit_test(test_apply_summary),
        cmocka_unit_test(test_apply_summary_revived),
        cmocka_unit_test(test_apply_summary_rejects),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_empty_state),
        cmocka_unit_test(test_sparse_state),
        cmocka_unit_test(test_layer_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
