/* header_check.c - eco.h must compile as C89 and as C++98 with
 * -pedantic-errors, for programs older than the library: ctest compiles
 * this file both ways (test/CMakeLists.txt, header_c89 and header_cxx98). */
#include <eco.h>

#if !defined(ECO_VERSION_NUMBER) || ECO_VERSION_NUMBER < 0
#error "ECO_VERSION_NUMBER is not a number the preprocessor can use"
#endif

static eco_state_t last_state = ECO_DONE;
static unsigned (*version_of)(void) = eco_version;

int main(void)
{
    eco_attr_t attr;
    if (eco_attr_init(&attr) != 0)
        return 1;
    return version_of() == 0 || last_state != ECO_DONE;
}
