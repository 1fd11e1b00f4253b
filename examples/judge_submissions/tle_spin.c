// expect: TLE (burns CPU: the cpu_time limit)
#include <stdio.h>
int main(void) {
    volatile unsigned long i = 0;
    for (;;) i++;
    return 0;
}
