/* A freestanding runtime for the sandbox init: raw system calls and the few
 * string helpers it needs, so the init links no libc at all.
 *
 * Why: on these machines a static glibc program spends ~0.35 ms before main()
 * (glibc probes the CPU with cpuid, and every cpuid is a VM exit here), while
 * a program with its own _start exits in 0.1 ms (measured: posix_spawn +
 * waitpid of each, median of 450).  The init runs once per sandbox start, so
 * that is a fifth of the whole start budget.
 *
 * Only glibc *headers* are used, for constants and struct layouts that match
 * the kernel's ABI; calling any libc function fails at link time
 * (-nostdlib), which is the point.  Every wrapper returns -errno on failure.
 */
#ifndef SBX_RT_H
#define SBX_RT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#include "sys6.h"


#if defined(__x86_64__)
/* Entry: the kernel leaves argc at (%rsp); align the stack and call in. */
#define SBX_START                                                                                     \
    __asm__(".text\n.global _start\n_start:\n xor %rbp,%rbp\n mov %rsp,%rdi\n and $-16,%rsp\n" \
            " call start_c\n hlt\n")
/* A child in our memory, on its own stack: clone(CLONE_VM |
 * CLONE_CHILD_CLEARTID | SIGCHLD) with *ctid as the child's tid word; the
 * child runs fn(arg) on `stack_top` and exits with its result.  The kernel
 * zeroes *ctid and wakes its futex where it would end a vfork's wait: once
 * the child has exec'd (its own memory from then on) or is gone.  The
 * parent runs on meanwhile, unlike with CLONE_VFORK, and must leave the
 * child's stack and data alone until then (no page tables copied, no COW
 * faults, as with vfork).  Not CLONE_VFORK: its wait cannot be timed or
 * ended, and a stopped child (SIGSTOP from any process of its uid) held
 * the parent for good. */
long rt_clone_vm(int (*fn)(void *), void *stack_top, void *arg, int *ctid);
#define SBX_CLONE_VM                                                                      \
    __asm__(".text\n.global rt_clone_vm\nrt_clone_vm:\n"                                  \
            " and $-16,%rsi\n sub $16,%rsi\n mov %rdi,0(%rsi)\n mov %rdx,8(%rsi)\n"           \
            " mov %rcx,%r10\n mov $56,%eax\n mov $0x200111,%edi\n xor %edx,%edx\n"            \
            " xor %r8d,%r8d\n syscall\n test %rax,%rax\n jnz 1f\n"                            \
            " pop %rax\n pop %rdi\n call *%rax\n mov %eax,%edi\n mov $60,%eax\n syscall\n hlt\n" \
            "1: ret\n")
#elif defined(__aarch64__)
#define SBX_START __asm__(".text\n.global _start\n_start:\n mov x0, sp\n bl start_c\n")
/* clone(flags x0, stack x1, parent_tid x2, tls x3, child_tid x4) */
long rt_clone_vm(int (*fn)(void *), void *stack_top, void *arg, int *ctid);
#define SBX_CLONE_VM                                                                          \
    __asm__(".text\n.global rt_clone_vm\nrt_clone_vm:\n and x1, x1, #-16\n"                   \
            " stp x0, x2, [x1, #-16]!\n mov x4, x3\n mov x8, #220\n mov x0, #0x0111\n"        \
            " movk x0, #0x20, lsl #16\n mov x2, #0\n mov x3, #0\n svc 0\n cbnz x0, 1f\n"       \
            " ldp x1, x0, [sp], #16\n blr x1\n mov x8, #93\n svc 0\n1: ret\n")
#else
#error "the init's runtime is written for x86_64 and aarch64"
#endif

#define SYS0(n) raw6((n), 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) raw6((n), (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) raw6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) raw6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) raw6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS5(n, a, b, c, d, e) raw6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

__attribute__((noreturn)) static inline void sys_exit(int code)
{
    for (;;)
        SYS1(SYS_exit_group, code);
}

/* The compiler may emit calls to these for struct copies and zeroing. */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

static inline size_t rt_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static inline int rt_streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static inline int rt_startswith(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static inline const char *rt_memchr(const char *p, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == c)
            return p + i;
    return NULL;
}

static inline const char *rt_strrchr(const char *s, char c)
{
    const char *r = NULL;
    for (; *s; s++)
        if (*s == c)
            r = s;
    return r;
}

static inline int rt_haschr(const char *s, char c)
{
    for (; *s; s++)
        if (*s == c)
            return 1;
    return 0;
}

/* Appends src to the NUL-terminated dst of capacity cap (truncating). */
static inline void rt_append(char *dst, size_t cap, const char *src)
{
    size_t n = rt_strlen(dst);
    while (*src && n + 1 < cap)
        dst[n++] = *src++;
    dst[n] = 0;
}

static inline void rt_append_uint(char *dst, size_t cap, unsigned long v)
{
    char tmp[24];
    int i = (int)sizeof tmp - 1;
    tmp[i] = 0;
    do
        tmp[--i] = (char)('0' + v % 10);
    while ((v /= 10) && i > 0);
    rt_append(dst, cap, tmp + i);
}

#endif
