/* The C floor of an exec: vfork + execve + wait of argv[2], argv[1] times,
 * with an empty environment; prints the median and percentiles in us.
 *   gcc -O2 -o /tmp/floor benchmarks/probes/floor.c && /tmp/floor 2000 /bin/true
 * Copied into a sandbox and run there, it gives the floor inside one. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include <time.h>
static int cmp(const void *a, const void *b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc, char **argv){
  int n = atoi(argv[1]); double *t = malloc(n*sizeof *t);
  char *envp[] = {NULL};
  for (int i=0;i<n;i++){
    struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
    pid_t p = vfork();
    if (!p){ execve(argv[2], argv+2, envp); _exit(127);}
    int st; waitpid(p,&st,0);
    clock_gettime(CLOCK_MONOTONIC,&b);
    t[i]=(b.tv_sec-a.tv_sec)*1e6+(b.tv_nsec-a.tv_nsec)/1e3;
  }
  qsort(t,n,sizeof *t,cmp);
  printf("median %.1f us p10 %.1f p90 %.1f p99 %.1f\n", t[n/2], t[n/10], t[n*9/10], t[n*99/100]);
}
