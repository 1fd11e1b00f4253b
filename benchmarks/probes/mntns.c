/* What a new mount namespace costs a child that makes one and exits, N times:
 * made from the caller's (the host's: a copy of every mount in it), and from
 * a namespace holding one tmpfs; a plain fork beside them.  Root only.
 *   gcc -O2 -o /tmp/mntns benchmarks/probes/mntns.c && /tmp/mntns 1000 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/stat.h>
static double now(){struct timespec a; clock_gettime(CLOCK_MONOTONIC,&a); return a.tv_sec*1e6+a.tv_nsec/1e3;}
static void run(const char *what, int n){
  double t0=now();
  for(int i=0;i<n;i++){ pid_t p=fork(); if(!p){ if(unshare(CLONE_NEWNS)) _exit(1); _exit(0);} int st; waitpid(p,&st,0); if(st) {printf("fail\n"); exit(1);} }
  double t1=now(); printf("%s: %.1f us per child with a new mount ns\n", what, (t1-t0)/n);
}
int main(int argc,char**argv){
  int n=atoi(argv[1]);
  setvbuf(stdout, NULL, _IONBF, 0); /* the children print too */
  for(int r=0;r<2;r++){
  run("host ns", n);
  // a template: a private ns with a tmpfs root only
  pid_t p=fork(); if(!p){
    unshare(CLONE_NEWNS); mount(NULL,"/",NULL,MS_REC|MS_PRIVATE,NULL);
    mount("t","/mnt","tmpfs",0,NULL); mkdir("/mnt/old",0700);
    if(syscall(SYS_pivot_root,"/mnt","/mnt/old")) {perror("pivot"); fflush(stdout); _exit(1);}
    chdir("/"); umount2("/old",MNT_DETACH);
    run("template ns (1 mount)", n); fflush(stdout); _exit(0);}
  waitpid(p,NULL,0);
  }
  // baseline: fork without unshare
  double t0=now(); for(int i=0;i<n;i++){pid_t q=fork(); if(!q) _exit(0); waitpid(q,NULL,0);} printf("plain fork: %.1f us\n",(now()-t0)/n);
}
