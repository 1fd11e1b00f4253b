// expect: RE (SIGSEGV)
#include <stdio.h>
int main(void) {
    volatile int *p = (int *)16;
    printf("%d\n", *p);
    return 0;
}
