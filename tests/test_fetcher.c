/* SPDX-License-Identifier: MIT */
/* Unit tests of the fetch retry schedule; the worker pool itself runs in test_pipeline. */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "fetcher.h"

START_TEST(backoff_doubles_per_attempt)
{
    /* With the largest random value the delay is the full step; with 0, half of it. */
    ck_assert_int_eq(crd_fetcher_backoff_ms(1, 100, 10000, 0), 50);
    ck_assert_int_eq(crd_fetcher_backoff_ms(1, 100, 10000, 50), 100);
    ck_assert_int_eq(crd_fetcher_backoff_ms(2, 100, 10000, 0), 100);
    ck_assert_int_eq(crd_fetcher_backoff_ms(3, 100, 10000, 0), 200);
    ck_assert_int_eq(crd_fetcher_backoff_ms(4, 100, 10000, 400), 800);
}
END_TEST

START_TEST(backoff_stays_within_bounds)
{
    for (unsigned attempt = 1; attempt < 80; attempt++) {
        for (uint32_t random_value = 0; random_value < 5000; random_value += 97) {
            int64_t delay = crd_fetcher_backoff_ms(attempt, 100, 3000, random_value * 7919u);
            ck_assert_int_ge(delay, 50);
            ck_assert_int_le(delay, 3000);
        }
    }
}
END_TEST

START_TEST(backoff_reaches_the_cap)
{
    ck_assert_int_eq(crd_fetcher_backoff_ms(60, 100, 3000, 0), 1500);
    ck_assert_int_eq(crd_fetcher_backoff_ms(60, 100, 3000, 1500), 3000);
    ck_assert_int_eq(crd_fetcher_backoff_ms(1000, 5000, 600000, 0), 300000);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("fetcher");
    TCase *tcase = tcase_create("backoff");
    tcase_add_test(tcase, backoff_doubles_per_attempt);
    tcase_add_test(tcase, backoff_stays_within_bounds);
    tcase_add_test(tcase, backoff_reaches_the_cap);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
