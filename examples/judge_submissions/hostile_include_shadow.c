// expect: CE (the compiler runs in a sandbox too: this reads that sandbox's /etc/shadow, which its user cannot)
#include "/etc/shadow"
int main(void) { return 0; }
