/* tests/test.h — a minimal test harness: checks count failures and report where they are.
 *
 *   TEST_MAIN_BEGIN ... CHECK(cond, "fmt", ...) ... TEST_MAIN_END
 * prints "N passed, M failed" and exits non-zero when anything failed. */
#ifndef SM_TEST_H
#define SM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_count, test_failed_count;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (cond) {                                                               \
            test_passed_count++;                                                  \
        } else {                                                                  \
            test_failed_count++;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

/* Check an sm_status call succeeded; on failure print its message. */
#define CHECK_OK(expr, errp)                                                      \
    do {                                                                          \
        sm_status check_ok_status_ = (expr);                                      \
        CHECK(check_ok_status_ == SM_OK, "%s -> %s: %s", #expr,                   \
              sm_status_name(check_ok_status_), (errp)->msg);                     \
    } while (0)

/* Relative L2 error ||a-b|| / ||b||. */
static inline double test_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define TEST_MAIN_END                                                             \
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);       \
    return test_failed_count ? 1 : 0;

#endif
