// expect: RE (no new namespaces: unshare is refused, the program gives up)
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
int main(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
        perror("unshare");
        return 1;
    }
    puts("unshared");
    return 0;
}
