// expect: RE (a fork bomb: the pids limit ends it)
#include <unistd.h>
int main(void) {
    for (;;) fork();
    return 0;
}
