/* test_version.c - the version eco.h announces is the project's, and the
 * library reports the one it was built with. */
#include <stdio.h>
#include <string.h>

#include "test_util.h"

START_TEST(header_matches_project)
{
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", ECO_VERSION_MAJOR, ECO_VERSION_MINOR, ECO_VERSION_PATCH);
    ck_assert_str_eq(v, ECO_PROJECT_VERSION); /* CMakeLists.txt's project() */
    ck_assert_int_lt(ECO_VERSION_MINOR, 100);
    ck_assert_int_lt(ECO_VERSION_PATCH, 100);
    ck_assert_int_eq(ECO_VERSION_NUMBER,
                     ECO_VERSION_MAJOR * 10000 + ECO_VERSION_MINOR * 100 + ECO_VERSION_PATCH);
#if ECO_VERSION_NUMBER < 100
#error "ECO_VERSION_NUMBER must work in #if"
#endif
}
END_TEST

START_TEST(library_reports_its_version)
{
    /* No runtime needed, in any thread. */
    ck_assert_uint_eq(eco_version(), ECO_VERSION_NUMBER);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("version");
    TCase *tc = tcase_create("version");
    tcase_add_test(tc, header_matches_project);
    tcase_add_test(tc, library_reports_its_version);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
