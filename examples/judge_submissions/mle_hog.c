// expect: MLE (touches 1 GiB, a page at a time)
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    size_t size = (size_t)1 << 30;
    volatile char *p = malloc(size);
    if (!p) return 3;
    for (size_t i = 0; i < size; i += 4096) p[i] = 1;
    printf("%d\n", p[size - 1]);
    return 0;
}
